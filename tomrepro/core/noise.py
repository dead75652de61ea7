"""Noise indexed by env step: the value at step t depends only on (seed, stream, t).

Exploration noise drawn this way needs no generator state in checkpoints, so a resumed run draws
exactly what an uninterrupted one would, and anyone holding a policy snapshot can recompute the
actions recorded in a buffer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

NORMAL_STREAM, UNIFORM_STREAM = 1, 2


class StepNoise:
    """Per-step noise vectors of width `width`, generated in cached blocks of `block` steps."""

    def __init__(
        self, seed: int, width: int, kind: Literal["normal", "uniform"], block: int = 4096
    ) -> None:
        self.seed, self.width, self.kind, self.block = seed, width, kind, block
        self._stream = NORMAL_STREAM if kind == "normal" else UNIFORM_STREAM
        self._cached_index = -1
        self._cached = np.empty((0, width), dtype=np.float32)

    def _block(self, index: int) -> np.ndarray:
        if index != self._cached_index:
            rng = np.random.default_rng([self.seed, self._stream, index])
            shape = (self.block, self.width)
            self._cached = (
                rng.standard_normal(shape, dtype=np.float32)
                if self.kind == "normal"
                else rng.random(shape, dtype=np.float32)
            )
            self._cached_index = index
        return self._cached

    def at(self, step: int) -> np.ndarray:
        """Noise for env step `step`, shape (width,): standard normal, or uniform on [0, 1)."""
        return self._block(step // self.block)[step % self.block]

    def steps(self, steps: np.ndarray) -> np.ndarray:
        """Noise for many steps at once, shape (len(steps), width)."""
        steps = np.asarray(steps)
        out = np.empty((len(steps), self.width), dtype=np.float32)
        blocks = steps // self.block
        for index in np.unique(blocks):
            mask = blocks == index
            out[mask] = self._block(int(index))[steps[mask] % self.block]
        return out
