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

import torch
from torch import nn
from torch.nn import functional as F

from tomrepro.core.config import TOMConfig
from tomrepro.learning.networks import BatchedLinear


class TransitionDiscriminator(nn.Module):
    """(B, s + a + s') -> logit (B,)."""

    def __init__(self, obs_dim: int, act_dim: int, width: int = 256) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        half = width // 2
        self.state = BatchedLinear(1, obs_dim, half)
        self.action = BatchedLinear(1, act_dim, half)
        self.next_state = BatchedLinear(1, obs_dim, half)
        self.hidden = BatchedLinear(1, 3 * half, width)
        self.out = BatchedLinear(1, width, 1)

    def reset_parameters(self, generator: torch.Generator) -> None:
        for layer in (self.state, self.action, self.next_state, self.hidden, self.out):
            layer.reset_parameters(generator)

    def forward(self, sas: torch.Tensor) -> torch.Tensor:
        o, a = self.obs_dim, self.act_dim
        x = sas.unsqueeze(0)
        h = torch.cat(
            (
                torch.tanh(self.state(x[..., :o])),
                torch.tanh(self.action(x[..., o : o + a])),
                torch.tanh(self.next_state(x[..., o + a :])),
            ),
            dim=-1,
        )
        return self.out(torch.tanh(self.hidden(h)))[0, :, 0]


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
    `generator` is a CPU generator (draws are moved to the device).
    """
    device = positives.device
    disc = TransitionDiscriminator(obs_dim, act_dim, cfg.discriminator_width)
    disc.reset_parameters(generator)
    disc.to(device)
    opt = torch.optim.Adam(disc.parameters(), lr=cfg.discriminator_lr)
    b = cfg.discriminator_batch
    ones = torch.ones(b, device=device)
    soft = torch.full((b,), cfg.negative_target, device=device)
    losses = []
    for _ in range(cfg.discriminator_steps):
        pos = positives[torch.randint(0, len(positives), (b,), generator=generator).to(device)]
        neg = negatives[torch.randint(0, len(negatives), (b,), generator=generator).to(device)]
        logits = disc(torch.cat((pos, neg)))  # one pass for both classes
        bce = F.binary_cross_entropy_with_logits(logits[:b], ones)
        bce = bce + F.binary_cross_entropy_with_logits(logits[b:], soft)
        alpha = torch.rand(b, 1, generator=generator).to(device)
        mix = (alpha * pos + (1 - alpha) * neg).requires_grad_(True)
        grad = torch.autograd.grad(disc(mix).sum(), mix, create_graph=True)[0]
        penalty = cfg.gradient_penalty * (grad.norm(dim=1) - 1).square().mean()
        loss = bce + penalty
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return disc, torch.stack(losses).tolist()


@torch.no_grad()
def discriminator_reward(
    disc: TransitionDiscriminator, sas: torch.Tensor, chunk: int = 65_536
) -> torch.Tensor:
    """R = log c - log(1 - c), which is the logit itself: (N,)."""
    return torch.cat([disc(part) for part in sas.split(chunk)])
