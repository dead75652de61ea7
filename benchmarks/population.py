"""SAC updates of a population of R runs in one process against separate single runs.

The SAC update is the online loop's largest phase (5 updates per env step on average at the
official schedule). A population steps R runs' agents with one batched update; this prints, for
each R, the milliseconds of one population update, updates per second per run and in aggregate,
and the aggregate against R single runs updated one after another in one process (the time R
separate processes would need on one core). Hopper's sizes, 256 x 256 networks, batch 256.

Run: `python benchmarks/population.py [--sizes 1 4 16 32] [--device auto] [--seconds 3]`.
Not measured here yet: env steps per second of whole MBPO populations (the population loop is
not built), CUDA graphs (not built). On a GPU the same script measures the eager CUDA path.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tomrepro.core.config import SACConfig
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.reference_speed import sac_update_ms
from tomrepro.learning.sac import SAC, SACBatch

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256


def _batch(runs: int, device: torch.device, seed: int) -> SACBatch:
    g = torch.Generator().manual_seed(seed)
    shape = (runs, BATCH)
    return SACBatch(
        torch.randn((*shape, OBS_DIM), generator=g).to(device),
        (torch.rand((*shape, ACT_DIM), generator=g) * 2 - 1).to(device),
        torch.randn(shape, generator=g).to(device),
        torch.randn((*shape, OBS_DIM), generator=g).to(device),
        torch.ones(shape).to(device),
    )


def _agent(runs: int, device: torch.device) -> SAC:
    cfg = SACConfig(hidden_sizes=(256, 256), batch_size=BATCH)
    generators = [torch.Generator(device=device).manual_seed(r) for r in range(runs)]
    return SAC(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM), cfg, device, generators)


def seconds_per_update(runs: int, device: torch.device, seconds: float) -> float:
    """Median wall seconds of one update of a population of `runs`, over about `seconds`."""
    agent, batch = _agent(runs, device), _batch(runs, device, 0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        agent.update(batch)
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        tick = time.perf_counter()
        agent.update(batch)
        sync()
        times.append(time.perf_counter() - tick)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(
        f"device {device}, {torch.get_num_threads()} threads; reference SAC update "
        f"{sac_update_ms():.1f} ms (CPU, one run)"
    )
    single = seconds_per_update(1, device, args.seconds)
    print(f"{'R':>4}{'ms/update':>11}{'upd/s/run':>11}{'upd/s all':>11}{'vs R singles':>14}")
    for runs in args.sizes:
        t = single if runs == 1 else seconds_per_update(runs, device, args.seconds)
        print(
            f"{runs:>4}{1000 * t:>11.2f}{1 / t:>11.1f}{runs / t:>11.1f}{runs * single / t:>13.2f}x"
        )
    print("vs R singles: R single-run updates one after another / one population update")


if __name__ == "__main__":
    main()
