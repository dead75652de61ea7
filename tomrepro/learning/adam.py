"""Adam whose arithmetic on an element does not depend on where the element sits in its tensor.

torch's Adam kernels (fused, foreach and single-tensor alike) run vector code on most elements
and scalar code on a tensor's tail, and the two round differently (fused multiply-adds), so a
run's parameters stacked at another offset in a population's tensor would drift from the same
run alone in the last bits after a few steps. Here every update is a chain of separate
elementwise ops (multiply, add, square root, divide), each correctly rounded in vector and scalar
code alike. Same algorithm and defaults as `torch.optim.Adam` (no weight decay, no amsgrad).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


class Adam:
    """Adam over a fixed list of parameters; all share one step counter."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.step_count += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch._foreach_mul_(self.exp_avg, beta1)
        torch._foreach_add_(self.exp_avg, torch._foreach_mul(grads, 1 - beta1))
        squares = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(squares, 1 - beta2)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_add_(self.exp_avg_sq, squares)
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**self.step_count))
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(self.exp_avg, denom)
        torch._foreach_mul_(update, self.lr / (1 - beta1**self.step_count))
        torch._foreach_sub_(self.params, update)

    def state_dict(self, rows: slice = slice(None)) -> dict[str, Any]:
        """The moments (cut to `rows` of every parameter's first dimension) and the step."""
        return {
            "step": self.step_count,
            "exp_avg": [m[rows].clone() for m in self.exp_avg],
            "exp_avg_sq": [v[rows].clone() for v in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, Any], rows: slice = slice(None)) -> None:
        """Restore the moments into `rows` (a population restores one run at a time; its runs
        always step together, so they share the step)."""
        moments = (state["exp_avg"], state["exp_avg_sq"])
        if any(len(m) != len(self.params) for m in moments):
            raise ValueError(
                f"optimiser state for {len(moments[0])} tensors, expected {len(self.params)}"
            )
        with torch.no_grad():
            for own, saved in ((self.exp_avg, moments[0]), (self.exp_avg_sq, moments[1])):
                for target, value in zip(own, saved, strict=True):
                    target[rows].copy_(value)
        self.step_count = int(state["step"])
