"""MBPO's model-data pool and the SAC minibatches that mix it with real data.

The pool is a preallocated ring of device tensors: each model round writes its rollouts with two
slice copies, and the oldest rollouts are overwritten once it is full. A SAC minibatch takes
`round(batch * real_ratio)` rows from the real buffer (MBPO: 5 %) and the rest from the pool,
gathered into tensors allocated once.
"""

from __future__ import annotations

from typing import Any

import torch

from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.errors import TomreproError
from tomrepro.learning.sac import MinibatchSampler, SACBatch

POOL_FIELDS = ("observations", "actions", "rewards", "next_observations", "masks")


class ModelPool:
    """Ring of model transitions: obs (C, o), actions (C, a), rewards (C,), next_obs, masks."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity, self.device = capacity, device
        widths = {
            "observations": (obs_dim,),
            "actions": (act_dim,),
            "next_observations": (obs_dim,),
        }
        self.data = {
            k: torch.zeros((capacity, *widths.get(k, ())), device=device) for k in POOL_FIELDS
        }
        self.size = 0
        self._next = 0

    def __len__(self) -> int:
        return self.size

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        """Append rows (the newest `capacity` of them if there are more)."""
        n = rows["observations"].shape[0]
        skip = max(0, n - self.capacity)
        n -= skip
        first = min(n, self.capacity - self._next)
        for k in POOL_FIELDS:
            src, dst = rows[k][skip:], self.data[k]
            dst[self._next : self._next + first] = src[:first]
            dst[: n - first] = src[first:]
        self._next = (self._next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def state_dict(self) -> dict[str, Any]:
        """Live rows on the CPU, in physical order, with the write position."""
        return {
            "size": self.size,
            "next": self._next,
            **{k: v[: self.size].cpu() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise TomreproError(f"pool checkpoint holds {size} rows, capacity is {self.capacity}")
        for k in POOL_FIELDS:
            self.data[k][:size] = state[k].to(self.device)
        self.size, self._next = size, int(state["next"])


class MixedBatchSampler:
    """SAC minibatches of real rows (share `real_ratio`) followed by model rows from the pool."""

    def __init__(
        self,
        buffer: ReplayBuffer,
        pool: ModelPool,
        batch_size: int,
        real_ratio: float,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.pool, self.generator, self.device = pool, generator, device
        self.real_rows = int(batch_size * real_ratio)
        self.model_rows = batch_size - self.real_rows
        self.real = (
            MinibatchSampler(buffer, self.real_rows, device, generator) if self.real_rows else None
        )
        self._idx = torch.empty(self.model_rows, dtype=torch.long)
        self._out = {
            k: torch.empty((batch_size, *v.shape[1:]), device=device) for k, v in pool.data.items()
        }

    def sample(self) -> SACBatch:
        out, r = self._out, self.real_rows
        if self.model_rows:
            if len(self.pool) == 0:
                raise TomreproError("the model pool is empty: train the model and roll out first")
            torch.randint(
                0, len(self.pool), (self.model_rows,), generator=self.generator, out=self._idx
            )
            idx = self._idx.to(self.device, non_blocking=True)
            for k, src in self.pool.data.items():
                torch.index_select(src, 0, idx, out=out[k][r:])
        if self.real is not None:
            real = self.real.sample()
            out["observations"][:r].copy_(real.observations)
            out["actions"][:r].copy_(real.actions)
            out["rewards"][:r].copy_(real.rewards)
            out["next_observations"][:r].copy_(real.next_observations)
            out["masks"][:r].copy_(real.masks)
        return SACBatch(
            out["observations"],
            out["actions"],
            out["rewards"],
            out["next_observations"],
            out["masks"],
        )
