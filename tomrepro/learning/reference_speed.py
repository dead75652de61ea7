"""The machine's reference speed: the time of one SAC update (256 x 256 networks, batch 256).

Machines of one kind differ by up to ~2.5x between sessions (DESIGN §8), so every wall time the
project reports comes with this figure, measured in the same process, to be read as a ratio.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tomrepro.core.config import SACConfig
from tomrepro.learning.sac import SAC, SACBatch

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256  # Hopper's sizes


def sac_update_ms(updates: int = 40, warmup: int = 5) -> float:
    """Median milliseconds of one SAC update on the CPU with random data."""
    cfg = SACConfig(hidden_sizes=(256, 256), batch_size=BATCH)
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    agent = SAC(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM), cfg, device, generator)
    data = torch.randn((2 * BATCH, OBS_DIM), generator=generator)
    batch = SACBatch(
        data[:BATCH],
        torch.rand((BATCH, ACT_DIM), generator=generator) * 2 - 1,
        torch.randn(BATCH, generator=generator),
        data[BATCH:],
        torch.ones(BATCH),
    )
    times = []
    for i in range(warmup + updates):
        tick = time.perf_counter()
        agent.update(batch)
        if i >= warmup:
            times.append(time.perf_counter() - tick)
    return float(1000 * np.median(times))
