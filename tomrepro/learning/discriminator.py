"""TOM's transition discriminator c(s, a, s') and the reward R = log c - log(1 - c) it yields.

Architecture of the official `Discriminator_SAS`: s, a and s' each pass their own tanh layer
(width/2 each), the three are concatenated, then a tanh layer of `width` and a logit. Trained with
binary cross-entropy, the current policy's recent transitions D^pi as positives (target 1) and the
replay buffer D^R as negatives with the soft target 0.1, plus a gradient penalty
lambda * (||grad_x logit(x_mix)|| - 1)^2 on random interpolates of a positive and a negative batch.
Deviation, stated in the report: the official code gives only the final layers to its optimiser,
leaving the per-input layers at their random initialisation; all layers are trained here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from tomrepro.core.config import TOMConfig
from tomrepro.learning.networks import BatchedLinear, alias_into, detach_views, step_members


class TransitionDiscriminator(nn.Module):
    """(B, s + a + s') -> logit (B,); with `members` R (a population's discriminators stacked),
    (R, B, s + a + s') -> (R, B)."""

    def __init__(self, obs_dim: int, act_dim: int, width: int = 256, members: int = 1) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        half = width // 2
        self.state = BatchedLinear(members, obs_dim, half, group=1)
        self.action = BatchedLinear(members, act_dim, half, group=1)
        self.next_state = BatchedLinear(members, obs_dim, half, group=1)
        self.hidden = BatchedLinear(members, 3 * half, width, group=1)
        self.out = BatchedLinear(members, width, 1, group=1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        for layer in (self.state, self.action, self.next_state, self.hidden, self.out):
            layer.reset_parameters(generator)

    def forward(self, sas: torch.Tensor) -> torch.Tensor:
        o, a = self.obs_dim, self.act_dim
        x = sas if sas.dim() == 3 else sas.unsqueeze(0)
        h = torch.cat(
            (
                torch.tanh(self.state(x[..., :o])),
                torch.tanh(self.action(x[..., o : o + a])),
                torch.tanh(self.next_state(x[..., o + a :])),
            ),
            dim=-1,
        )
        logits = self.out(torch.tanh(self.hidden(h)))[..., 0]
        return logits if sas.dim() == 3 else logits[0]


def train_discriminator(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    cfg: TOMConfig,
    obs_dim: int,
    act_dim: int,
    generator: torch.Generator,
) -> tuple[TransitionDiscriminator, list[float]]:
    """A freshly initialised discriminator trained for `cfg.discriminator_steps` Adam steps.

    `positives` (P, s+a+s') and `negatives` (N, s+a+s') are on the training device;
    `generator` is a CPU generator (draws are moved to the device). A population of one
    (`train_discriminators`).
    """
    return train_discriminators([(positives, negatives, generator)], cfg, obs_dim, act_dim)[0]


def train_discriminators(
    jobs: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Generator]],
    cfg: TOMConfig,
    obs_dim: int,
    act_dim: int,
) -> list[tuple[TransitionDiscriminator, list[float]]]:
    """Fresh discriminators for several (positives, negatives, generator) jobs on one device,
    trained as one stacked network: each draws its own minibatches from its own generator and
    steps its own optimiser, so it ends exactly where it would alone (CPU)."""
    if not jobs:
        return []
    device = jobs[0][0].device
    discs = []
    for _, _, generator in jobs:
        disc = TransitionDiscriminator(obs_dim, act_dim, cfg.discriminator_width)
        disc.reset_parameters(generator)
        discs.append(disc.to(device))
    stack = TransitionDiscriminator(obs_dim, act_dim, cfg.discriminator_width, len(jobs))
    stack.to(device)
    alias_into(stack, discs)
    optimizers = [torch.optim.Adam(d.parameters(), lr=cfg.discriminator_lr) for d in discs]
    b = cfg.discriminator_batch
    ones = torch.ones(b, device=device)
    soft = torch.full((b,), cfg.negative_target, device=device)
    losses: list[list[torch.Tensor]] = [[] for _ in jobs]
    try:
        for _ in range(cfg.discriminator_steps):
            pairs = []
            for positives, negatives, generator in jobs:
                pos = positives[
                    torch.randint(0, len(positives), (b,), generator=generator).to(device)
                ]
                neg = negatives[
                    torch.randint(0, len(negatives), (b,), generator=generator).to(device)
                ]
                pairs.append((pos, neg))
            logits = stack(torch.stack([torch.cat(pair) for pair in pairs]))  # (R, 2B)
            mixes = []
            for (pos, neg), (_, _, generator) in zip(pairs, jobs, strict=True):
                alpha = torch.rand(b, 1, generator=generator).to(device)
                mixes.append(alpha * pos + (1 - alpha) * neg)
            mix = torch.stack(mixes).requires_grad_(True)
            grad = torch.autograd.grad(stack(mix).sum(), mix, create_graph=True)[0]
            total = []
            for r in range(len(jobs)):
                bce = F.binary_cross_entropy_with_logits(logits[r, :b], ones)
                bce = bce + F.binary_cross_entropy_with_logits(logits[r, b:], soft)
                penalty = cfg.gradient_penalty * (grad[r].norm(dim=1) - 1).square().mean()
                loss = bce + penalty
                total.append(loss)
                losses[r].append(loss.detach())
            stack.zero_grad(set_to_none=False)
            torch.stack(total).sum().backward()
            step_members(stack, discs, optimizers)
    finally:
        detach_views(discs)
    return [(d, torch.stack(each).tolist()) for d, each in zip(discs, losses, strict=True)]


@torch.no_grad()
def discriminator_reward(
    disc: TransitionDiscriminator, sas: torch.Tensor, chunk: int = 65_536
) -> torch.Tensor:
    """R = log c - log(1 - c), which is the logit itself: (N,)."""
    return torch.cat([disc(part) for part in sas.split(chunk)])
