"""When MBPO trains SAC: the official TOM schedule or one burst every env step.

`official` (TOM's `train_policy_repeats`): within each epoch, at epoch-local step c (0 at the
epoch's first step), a burst of `burst` updates runs after the env step if the updates already
done in this epoch are at most `cap_per_step * c`; so with 20 and 5, bursts at c = 0, 4, 8, ...:
5 updates per env step on average (mbpo_pytorch, on which TOM builds, compared with the global
step count instead, a cap that never binds: 20 per step). `every_step`: a burst every env step.

In closed form, an epoch whose policy phase starts at local step c0 bursts at
c_n = max(c0 + n, ceil(n * burst / cap_per_step)), n = 0, 1, ... The loop asks `burst_at`, and
PMAC's per-burst policy versions are `bursts_before` (no stored column), so both read one rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Schedule = Literal["official", "every_step"]


@dataclass(frozen=True)
class UpdateSchedule:
    kind: Schedule
    burst: int  # SAC updates per burst
    cap_per_step: int  # official: updates allowed per epoch-local step before a burst
    epoch_length: int
    first_step: int  # env step at which the run's epochs start
    policy_start: int  # first env step after which SAC trains

    def _local(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Epoch-local step c and the local step c0 at which the epoch's policy phase starts."""
        since = steps - self.first_step
        epoch_start = self.first_step + (since // self.epoch_length) * self.epoch_length
        return since % self.epoch_length, np.maximum(0, self.policy_start - epoch_start)

    def _count_below(self, c: np.ndarray, c0: np.ndarray) -> np.ndarray:
        """Bursts of an epoch at local steps < c."""
        if self.kind == "every_step":
            return np.maximum(0, c - c0)
        by_cap = np.where(c >= 1, (np.maximum(c, 1) - 1) * self.cap_per_step // self.burst + 1, 0)
        return np.where(c <= c0, 0, np.minimum(c - c0, by_cap))

    def burst_at(self, steps: np.ndarray | int) -> np.ndarray:
        """Whether a burst follows the env step(s) `steps`."""
        steps = np.asarray(steps, dtype=np.int64)
        c, c0 = self._local(steps)
        return (self._count_below(c + 1, c0) - self._count_below(c, c0) > 0) & (
            steps >= self.policy_start
        )

    def bursts_before(self, steps: np.ndarray) -> np.ndarray:
        """How many bursts ran after env steps < t, for each t (PMAC's per-burst version)."""
        steps = np.asarray(steps, dtype=np.int64)
        if len(steps) == 0:
            return steps.copy()
        lo = min(int(steps.min()), self.first_step)
        grid = np.arange(lo, int(steps.max()) + 1, dtype=np.int64)
        done = np.concatenate(([0], np.cumsum(self.burst_at(grid))))
        return done[steps - lo]

    def updates_per_epoch(self) -> int:
        """SAC updates in one epoch spent wholly in the policy phase."""
        c = np.array([self.epoch_length])
        return int(self._count_below(c, np.zeros_like(c))[0]) * self.burst
