"""Wall seconds per named phase of a loop: since the last lap (one epoch) and in total."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class PhaseTimer:
    """`with timer.phase("sac"): ...` adds to the current lap; `lap()` closes it."""

    def __init__(self, phases: Iterable[str]) -> None:
        self.phases = tuple(phases)
        self.current = dict.fromkeys(self.phases, 0.0)
        self.total = dict.fromkeys(self.phases, 0.0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.current[name] += time.perf_counter() - tick

    def add(self, name: str, seconds: float) -> None:
        self.current[name] += seconds

    def lap(self) -> dict[str, float]:
        """The current lap's seconds, now added to the totals; a new lap starts."""
        done = self.current
        for name, seconds in done.items():
            self.total[name] += seconds
        self.current = dict.fromkeys(self.phases, 0.0)
        return done

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"current": dict(self.current), "total": dict(self.total)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        self.current = {**dict.fromkeys(self.phases, 0.0), **state["current"]}
        self.total = {**dict.fromkeys(self.phases, 0.0), **state["total"]}
