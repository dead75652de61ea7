"""The two dynamics-model families, as networks over normalised inputs and targets.

Both map (E, B, in) to a per-sample negative log-likelihood (E, B) and to a predictive mean, so
one trainer serves both. Each is a `BatchedMLP` body and a small head of its own parameters; the
`*_from` methods take the body's output, so a population's bodies can run as one stack:
- `GaussianEnsemble` (MBPO's): E Gaussian MLPs, SiLU, log-variance soft-bounded between learned
  limits (softplus against max and min), with the small regulariser on the limits.
- `MixtureDensityNetwork` (the official TOM code's): one MLP whose head gives, for each output
  dimension, a mixture of K univariate Gaussians; variance = softplus(raw) + softplus(noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from tomrepro.learning.networks import BatchedMLP

_LOG_2PI = math.log(2 * math.pi)
LOGVAR_BOUND_PENALTY = 0.01


class GaussianEnsemble(nn.Module):
    """E independent Gaussian MLPs: (E, B, in) -> mean, log-variance, each (E, B, out)."""

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.members, self.out_dim = members, out_dim
        self.body = BatchedMLP(members, in_dim, hidden, 2 * out_dim, activation=nn.SiLU)
        self.max_logvar = nn.Parameter(torch.full((1, 1, out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, out_dim), -10.0))

    def reset_parameters(self, generator: torch.Generator) -> None:
        self.body.reset_parameters(generator)
        with torch.no_grad():
            self.max_logvar.fill_(0.5)
            self.min_logvar.fill_(-10.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x))

    def head(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and bounded log-variance from the body's output."""
        mean, raw = out.chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL summed over output dims: (E, B)."""
        return self.nll_from(self.body(x), y)

    def nll_from(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean, logvar = self.head(out)
        per_dim = 0.5 * ((mean - y).square() * torch.exp(-logvar) + logvar + _LOG_2PI)
        return per_dim.sum(-1)

    def mean_from(self, out: torch.Tensor) -> torch.Tensor:
        return self.head(out)[0]

    def regularizer(self) -> torch.Tensor:
        return LOGVAR_BOUND_PENALTY * (self.max_logvar.sum() - self.min_logvar.sum())

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0]

    def sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, logvar = self(x)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return mean + torch.exp(0.5 * logvar) * noise


class MixtureDensityNetwork(nn.Module):
    """One MLP with a per-dimension K-component Gaussian mixture head; E is always 1."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden: Sequence[int], components: int = 10
    ) -> None:
        super().__init__()
        self.members, self.out_dim, self.components = 1, out_dim, components
        self.body = BatchedMLP(1, in_dim, hidden, 3 * out_dim * components, activation=nn.SiLU)
        self.noise = nn.Parameter(torch.zeros(1))

    def reset_parameters(self, generator: torch.Generator) -> None:
        self.body.reset_parameters(generator)
        with torch.no_grad():
            self.noise.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Component means, variances and log-weights, each (1, B, out, K)."""
        return self.head(self.body(x))

    def head(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e, b = out.shape[:2]
        mean, raw_var, logits = out.view(e, b, 3, self.out_dim, self.components).unbind(2)
        var = F.softplus(raw_var) + F.softplus(self.noise)
        return mean, var, torch.log_softmax(logits, dim=-1)

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mixture NLL summed over output dims: (1, B)."""
        return self.nll_from(self.body(x), y)

    def nll_from(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean, var, log_w = self.head(out)
        log_comp = -0.5 * ((y.unsqueeze(-1) - mean).square() / var + torch.log(var) + _LOG_2PI)
        per_dim = -torch.logsumexp(log_w + log_comp, dim=-1)
        return per_dim.sum(-1)

    def regularizer(self) -> torch.Tensor:
        return torch.zeros((), device=self.noise.device)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean_from(self.body(x))

    def mean_from(self, out: torch.Tensor) -> torch.Tensor:
        mean, _, log_w = self.head(out)
        return (mean * log_w.exp()).sum(-1)

    def sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, var, log_w = self(x)
        flat = log_w.exp().reshape(-1, self.components)
        pick = torch.multinomial(flat, 1, generator=generator).view(*mean.shape[:-1], 1)
        mu = mean.gather(-1, pick).squeeze(-1)
        sd = var.gather(-1, pick).squeeze(-1).sqrt()
        return mu + sd * torch.randn(mu.shape, generator=generator, device=mu.device)
