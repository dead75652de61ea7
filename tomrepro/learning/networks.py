"""Member-batched MLPs: E independent networks evaluated with one batched matmul per layer.

The twin critics of SAC (E = 2) and the dynamics ensemble (E = 7) are both stacks of E MLPs of
the same shape. Holding each layer's weights as one (E, in, out) tensor turns E small matmuls into
one `baddbmm`, which matters most on GPUs where kernel-launch overhead dominates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn


class BatchedLinear(nn.Module):
    """E linear layers: (E, B, in) -> (E, B, out).

    `group` > 0 marks the members as a population of runs of `group` members each. On CPU the
    layer then computes each run's group with its own batched matmul, the very call a run alone
    makes: CPU matmul kernels are chosen by the batch count too, and for some shapes (Hopper's
    11-wide input into 256) one call over all runs rounds differently from the run alone. On GPU
    all members go in one call.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, group: int = 0) -> None:
        super().__init__()
        self.group = group if 0 < group < members else 0
        # Zeros until `reset_parameters`: never uninitialised memory (which can hold NaN).
        self.weight = nn.Parameter(torch.zeros(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))

    def reset_parameters(self, generator: torch.Generator, members: slice = slice(None)) -> None:
        """Xavier-uniform weights, zero biases (the initialisation of the official SAC code).

        Drawn on the CPU from a CPU `generator` and copied, so initial weights are the same on
        every device. `members` resets a slice only: a population draws each run's members from
        that run's own generator, in the order a run alone draws them.
        """
        weight, bias = self.weight[members], self.bias[members]
        _, in_dim, out_dim = weight.shape
        bound = math.sqrt(6.0 / (in_dim + out_dim))
        with torch.no_grad():
            draw = torch.empty(weight.shape).uniform_(-bound, bound, generator=generator)
            weight.copy_(draw)
            bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.group
        if g and x.device.type == "cpu":
            return torch.cat(
                [
                    torch.baddbmm(self.bias[i : i + g], x[i : i + g], self.weight[i : i + g])
                    for i in range(0, self.weight.shape[0], g)
                ]
            )
        return torch.baddbmm(self.bias, x, self.weight)


class BatchedMLP(nn.Module):
    """E MLPs with the same widths: (E, B, in) -> (E, B, out), activation between layers."""

    def __init__(
        self,
        members: int,
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        group: int = 0,
    ) -> None:
        super().__init__()
        widths = [in_dim, *hidden_sizes, out_dim]
        self.layers: list[BatchedLinear] = nn.ModuleList(  # type: ignore[assignment]
            BatchedLinear(members, a, b, group) for a, b in itertools.pairwise(widths)
        )
        self.activation = activation()

    def reset_parameters(self, generator: torch.Generator, members: slice = slice(None)) -> None:
        for layer in self.layers:
            layer.reset_parameters(generator, members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


def alias_into(stacked: nn.Module, modules: Sequence[nn.Module]) -> None:
    """Copy `modules` (one structure, members along each parameter's first dimension) into
    consecutive member rows of `stacked`, then make each module's parameters views of its rows:
    they train as one computation while each module's own methods see the live values. Undo
    with `detach_views`."""
    with torch.no_grad():
        for name, target in stacked.named_parameters():
            start = 0
            for module in modules:
                own = module.get_parameter(name)
                rows = slice(start, start + own.shape[0])
                target[rows].copy_(own)
                own.data = target.data[rows]
                start = rows.stop
            if start != target.shape[0]:
                raise ValueError(f"{name}: {start} member rows for a stack of {target.shape[0]}")


def detach_views(modules: Sequence[nn.Module]) -> None:
    """Give modules aliased by `alias_into` parameters of their own again (current values)."""
    for module in modules:
        for p in module.parameters():
            p.data = p.data.clone()


def step_members(
    stacked: nn.Module,
    modules: Sequence[nn.Module],
    optimizers: Sequence[torch.optim.Optimizer],
    active: Sequence[bool] | None = None,
) -> None:
    """Step each aliased module's own optimiser on its rows of `stacked`'s gradients: torch's
    optimiser kernels round a tensor's vector body and scalar tail differently, so a module
    updates exactly as it would alone only on tensors of its own shape."""
    offsets = dict.fromkeys((name for name, _ in stacked.named_parameters()), 0)
    for r, (module, optimizer) in enumerate(zip(modules, optimizers, strict=True)):
        for name, target in stacked.named_parameters():
            own = module.get_parameter(name)
            rows = slice(offsets[name], offsets[name] + own.shape[0])
            offsets[name] = rows.stop
            own.grad = None if target.grad is None else target.grad[rows]
        if active is None or active[r]:
            optimizer.step()
