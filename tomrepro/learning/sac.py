"""Soft actor-critic, the backbone's agent (Haarnoja et al. 2018; the official TOM/MBPO variant).

One `SAC` object holds R runs' agents (a population; R = 1 for a single run, through the same
code): actors are one `BatchedMLP` with R members and the twin critics one with 2R (run r's Q1,
Q2 at members 2r, 2r + 1), so one update is a few batched ops for all runs. Each run keeps its
own generator, temperature and losses; the summed loss gives every run exactly its own
gradient, so a run's trajectory does not depend on its company. Targets are updated with one
fused `_foreach_lerp_`. Each critic's MSE is clamped at `critic_loss_clamp` before summing, as in
the official code. The temperature used in an update is the one from before it (the official
code's order).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.config import SACConfig
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.adam import Adam
from tomrepro.learning.networks import BatchedMLP

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_SQUASH_EPS = 1e-6
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SquashedGaussianActor(nn.Module):
    """pi(a|s): a Gaussian in pre-tanh space, squashed by tanh and scaled to the action bounds.

    Observations are (B, obs) for a single actor or (R, B, obs) for a population of R.
    """

    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        low: np.ndarray,
        high: np.ndarray,
        members: int = 1,
    ) -> None:
        super().__init__()
        self.members = members
        self.net = BatchedMLP(members, obs_dim, hidden, 2 * act_dim, group=1)
        self.register_buffer("action_scale", torch.as_tensor((high - low) / 2, dtype=torch.float32))
        self.register_buffer("action_bias", torch.as_tensor((high + low) / 2, dtype=torch.float32))

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray]) -> SquashedGaussianActor:
        """Rebuild an actor from a policy snapshot (sizes are read off the tensors)."""
        count = sum(1 for k in tensors if k.startswith("net.layers.") and k.endswith(".weight"))
        shapes = [tensors[f"net.layers.{i}.weight"].shape for i in range(count)]
        scale = np.asarray(tensors["action_scale"], dtype=np.float64)
        bias = np.asarray(tensors["action_bias"], dtype=np.float64)
        actor = cls(
            shapes[0][1],
            shapes[-1][2] // 2,
            tuple(s[2] for s in shapes[:-1]),
            bias - scale,
            bias + scale,
        )
        actor.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()})
        return actor

    def distribution(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, obs) or (R, B, obs) -> mean, log_std, each (..., act), pre-squash."""
        out = self.net(obs.unsqueeze(0))[0] if obs.dim() == 2 else self.net(obs)
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Action for given standard-normal `noise` (shaped like the action); noise = 0 gives the
        mean action."""
        mean, log_std = self.distribution(obs)
        return torch.tanh(mean + log_std.exp() * noise) * self.action_scale + self.action_bias

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action (..., act) and its log-probability (...).

        A population passes one generator per run: run r's noise is what it alone would draw.
        """
        mean, log_std = self.distribution(obs)
        noise = _standard_normal(mean.shape, generator, mean.device)
        squashed = torch.tanh(mean + log_std.exp() * noise)
        log_prob = -0.5 * noise.square() - log_std - _HALF_LOG_2PI
        log_prob = log_prob - torch.log(self.action_scale * (1 - squashed.square()) + _SQUASH_EPS)
        return squashed * self.action_scale + self.action_bias, log_prob.sum(-1)


def _standard_normal(
    shape: torch.Size, generator: torch.Generator | Sequence[torch.Generator], device: torch.device
) -> torch.Tensor:
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a population of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device) for g in generator])


class TwinCritic(nn.Module):
    """Q1, Q2 as one two-member network: (B, obs), (B, act) -> (2, B); a population of R:
    (R, B, obs), (R, B, act) -> (R, 2, B)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], members: int = 1):
        super().__init__()
        self.members = members
        self.net = BatchedMLP(2 * members, obs_dim + act_dim, hidden, 1, group=2)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat((obs, act), dim=-1)
        if x.dim() == 2:  # (B, obs + act): both critics see the same rows
            return self.net(x.unsqueeze(0).expand(2, -1, -1)).squeeze(-1)
        runs, rows, width = x.shape
        pairs = x.unsqueeze(1).expand(runs, 2, rows, width).reshape(2 * runs, rows, width)
        return self.net(pairs).view(runs, 2, rows)


@dataclass(frozen=True)
class SACBatch:
    """Tensors on the agent's device: obs (B, o), actions (B, a), rewards (B,), next_obs, masks.

    `masks` is 1 - terminated: truncated transitions still bootstrap.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    masks: torch.Tensor


class SAC:
    """Actors, twin critics with targets, automatic entropy tuning and optimisers of R runs.

    `generator` (one run) or `generators` (one per run, on `device`) drive all sampling; run r's
    initial weights come from a CPU generator seeded from its generator's seed, drawn in the order
    a run alone draws them, so they depend neither on the device nor on the population.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        cfg: SACConfig,
        device: torch.device,
        generator: torch.Generator | Sequence[torch.Generator],
    ) -> None:
        self.cfg, self.device = cfg, device
        self.generators = [generator] if isinstance(generator, torch.Generator) else [*generator]
        self.members = runs = len(self.generators)
        if runs < 1:
            raise ValueError("a population needs at least one run")
        hidden = tuple(cfg.hidden_sizes)
        self.actor = SquashedGaussianActor(obs_dim, act_dim, hidden, action_low, action_high, runs)
        self.critic = TwinCritic(obs_dim, act_dim, hidden, runs)
        for r, g in enumerate(self.generators):
            init = torch.Generator().manual_seed(derive_seed(int(g.initial_seed()), "sac/init"))
            self.actor.net.reset_parameters(init, slice(r, r + 1))
            self.critic.net.reset_parameters(init, slice(2 * r, 2 * r + 2))
        self.critic_target = TwinCritic(obs_dim, act_dim, hidden, runs)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        for module in (self.actor, self.critic, self.critic_target):
            module.to(device)
        self.log_alpha = torch.zeros(runs, device=device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = Adam(self.critic.parameters(), lr=cfg.lr)
        self.alpha_opt = Adam([self.log_alpha], lr=cfg.lr)
        self._actor_params: list[torch.Tensor] = list(self.actor.parameters())
        self._online: list[torch.Tensor] = list(self.critic.parameters())
        self._targets: list[torch.Tensor] = list(self.critic_target.parameters())

    @property
    def generator(self) -> torch.Generator:
        """The sampling generator of a single run."""
        if self.members != 1:
            raise ValueError("a population has one generator per run: use `generators`")
        return self.generators[0]

    def _sampling(self) -> torch.Generator | list[torch.Generator]:
        return self.generators[0] if self.members == 1 else self.generators

    def update(self, batch: SACBatch) -> torch.Tensor:
        """One SAC step of every run on its own minibatch: rows (B, ...) for a single run or
        (R, B, ...) for a population; returns [critic loss, actor loss, alpha, entropy] per run,
        (4,) or (R, 4), detached.

        Every loss is a sum over runs of that run's own loss, so each run's gradient is exactly
        the one it would get alone.
        """
        single = batch.rewards.dim() == 1
        if single and self.members != 1:
            raise ValueError(f"a population of {self.members} needs (R, B, ...) minibatches")
        b = _with_run_dim(batch) if single else batch
        gen, cfg = self._sampling(), self.cfg
        alpha = self.log_alpha.detach().exp()[:, None]  # (R, 1)
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(b.next_observations, gen)
            next_q = self.critic_target(b.next_observations, next_action).amin(1)
            target = b.rewards + cfg.gamma * b.masks * (next_q - alpha * next_log_prob)
        q = self.critic(b.observations, b.actions)  # (R, 2, B)
        per_critic = (q - target.unsqueeze(1)).square().mean(-1).clamp_max(cfg.critic_loss_clamp)
        critic_loss = per_critic.sum(-1)  # (R,)
        self.critic_opt.zero_grad()
        critic_loss.sum().backward()
        self.critic_opt.step()

        action, log_prob = self.actor.sample(b.observations, gen)
        q_new = self.critic(b.observations, action).amin(1)
        actor_loss = (alpha * log_prob - q_new).mean(-1)  # (R,)
        self.actor_opt.zero_grad()
        actor_loss.sum().backward(inputs=self._actor_params)  # no gradient into the critics
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha[:, None] * (log_prob.detach() + self.target_entropy))
        self.alpha_opt.zero_grad()
        alpha_loss.mean(-1).sum().backward()
        self.alpha_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(self._targets, self._online, cfg.tau)
        stats = torch.stack(
            (critic_loss.detach(), actor_loss.detach(), alpha[:, 0], -log_prob.detach().mean(-1)),
            dim=-1,
        )
        return stats[0] if single else stats

    def actor_arrays(self, run: int = 0) -> dict[str, np.ndarray]:
        """A CPU copy of run `run`'s actor tensors: what a policy snapshot stores."""
        return {
            k: v.detach().cpu().numpy().copy()
            for k, v in _member_slice(self.actor.state_dict(), run, 1).items()
        }

    def state_dict(self, run: int | None = None) -> dict[str, Any]:
        """Everything an agent's resume needs; `run` picks one run of a population (the format of
        a single run's state, so a run's checkpoint does not depend on its company)."""
        if run is None:
            if self.members != 1:
                raise ValueError("a population's state is saved per run: pass `run`")
            run = 0
        return {
            "actor": _member_slice(self.actor.state_dict(), run, 1),
            "critic": _member_slice(self.critic.state_dict(), run, 2),
            "critic_target": _member_slice(self.critic_target.state_dict(), run, 2),
            "log_alpha": self.log_alpha.detach()[run : run + 1].clone(),
            "actor_opt": self.actor_opt.state_dict(slice(run, run + 1)),
            "critic_opt": self.critic_opt.state_dict(slice(2 * run, 2 * run + 2)),
            "alpha_opt": self.alpha_opt.state_dict(slice(run, run + 1)),
            "generator": self.generators[run].get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], run: int | None = None) -> None:
        """Restore one run (`run`, or the single run) from a `state_dict(run)`."""
        if run is None:
            if self.members != 1:
                raise ValueError("a population's state is restored per run: pass `run`")
            run = 0
        # Optimiser state tensors (e.g. Adam's step counter) are loaded by reference; a private
        # copy keeps two agents restored from one in-memory state from sharing them.
        state = copy.deepcopy(state)
        _load_member(self.actor, state["actor"], run, 1)
        _load_member(self.critic, state["critic"], run, 2)
        _load_member(self.critic_target, state["critic_target"], run, 2)
        with torch.no_grad():
            self.log_alpha[run : run + 1].copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"], slice(run, run + 1))
        self.critic_opt.load_state_dict(state["critic_opt"], slice(2 * run, 2 * run + 2))
        self.alpha_opt.load_state_dict(state["alpha_opt"], slice(run, run + 1))
        self.generators[run].set_state(state["generator"])


class SACRun:
    """Run `run` of a population as one agent: its actor and critics are single-run modules whose
    weights alias the population's rows (its updates show through), for acting, rollouts and the
    model learners; its state saves and loads in the single-run format."""

    def __init__(self, population: SAC, run: int) -> None:
        self.population, self.run = population, run
        actor = population.actor
        low = (actor.action_bias - actor.action_scale).cpu().numpy()
        high = (actor.action_bias + actor.action_scale).cpu().numpy()
        widths = [layer.weight.shape for layer in actor.net.layers]
        hidden = tuple(w[2] for w in widths[:-1])
        obs_dim, act_dim = widths[0][1], widths[-1][2] // 2
        self.actor = SquashedGaussianActor(obs_dim, act_dim, hidden, low, high)
        self.critic = TwinCritic(obs_dim, act_dim, hidden)
        self.critic_target = TwinCritic(obs_dim, act_dim, hidden)
        _alias_rows(self.actor.net, actor.net, slice(run, run + 1))
        # The population's own bounds, not ones recomputed from them (which could differ in the
        # last bit for bounds that are not dyadic).
        self.actor.action_scale, self.actor.action_bias = actor.action_scale, actor.action_bias
        _alias_rows(self.critic.net, population.critic.net, slice(2 * run, 2 * run + 2))
        _alias_rows(
            self.critic_target.net, population.critic_target.net, slice(2 * run, 2 * run + 2)
        )
        self.actor.to(population.device)

    @property
    def generator(self) -> torch.Generator:
        return self.population.generators[self.run]

    def actor_arrays(self) -> dict[str, np.ndarray]:
        return self.population.actor_arrays(self.run)

    def state_dict(self) -> dict[str, Any]:
        return self.population.state_dict(self.run)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population.load_state_dict(state, self.run)


def _alias_rows(module: BatchedMLP, source: BatchedMLP, rows: slice) -> None:
    """Make `module`'s layers views of `source`'s member rows (no copy, no gradient)."""
    for own, theirs in zip(module.layers, source.layers, strict=True):
        own.weight = nn.Parameter(theirs.weight.detach()[rows], requires_grad=False)
        own.bias = nn.Parameter(theirs.bias.detach()[rows], requires_grad=False)


def _with_run_dim(batch: SACBatch) -> SACBatch:
    return SACBatch(
        batch.observations.unsqueeze(0),
        batch.actions.unsqueeze(0),
        batch.rewards.unsqueeze(0),
        batch.next_observations.unsqueeze(0),
        batch.masks.unsqueeze(0),
    )


def _member_slice(tensors: Mapping[str, torch.Tensor], run: int, per_run: int) -> dict[str, Any]:
    """Run `run`'s rows of member-stacked tensors (dim 0 = members); other tensors (the action
    bounds) as they are."""
    rows = slice(per_run * run, per_run * (run + 1))
    return {k: v[rows].clone() if k.startswith("net.") else v.clone() for k, v in tensors.items()}


def _load_member(module: nn.Module, tensors: Mapping[str, torch.Tensor], run: int, per_run: int):
    rows = slice(per_run * run, per_run * (run + 1))
    own = module.state_dict()
    if set(own) != set(tensors):
        raise KeyError(f"expected tensors {sorted(own)}, got {sorted(tensors)}")
    with torch.no_grad():
        for k, v in own.items():
            target = v[rows] if k.startswith("net.") else v
            if target.shape != tensors[k].shape:
                raise ValueError(f"{k}: shape {tuple(tensors[k].shape)}, expected {target.shape}")
            target.copy_(tensors[k])


class MinibatchSampler:
    """Uniform minibatches from a growing `ReplayBuffer`, gathered into preallocated tensors.

    On CPU the source tensors share memory with the buffer's arrays (no copy ever); on CUDA new
    rows are copied to a device mirror before each draw. Indices come from `generator` (CPU).
    """

    _FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations")

    def __init__(
        self,
        buffer: ReplayBuffer,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.buffer, self.batch_size, self.device, self.generator = (
            buffer,
            batch_size,
            device,
            generator,
        )
        storage = buffer.storage()
        host = {k: torch.from_numpy(storage[k]) for k in self._FIELDS}
        self._host = host
        self._shares_memory = device.type == "cpu"
        self._src = host if self._shares_memory else {k: v.to(device) for k, v in host.items()}
        self._synced = buffer.rows_written
        self._idx = torch.empty(batch_size, dtype=torch.long)
        self._out = {
            k: torch.empty((batch_size, *v.shape[1:]), dtype=v.dtype, device=device)
            for k, v in self._src.items()
        }
        self._masks = torch.empty(batch_size, device=device)

    def _sync(self) -> None:
        """Copy rows written since the last draw to the device (all rows once the ring wraps)."""
        written = self.buffer.rows_written
        if self._shares_memory or written == self._synced:
            return
        new = written - self._synced
        size = len(self.buffer)
        rows = slice(size - new, size) if written <= self.buffer.capacity else slice(0, size)
        for k, v in self._host.items():
            self._src[k][rows].copy_(v[rows], non_blocking=True)
        self._synced = written

    def sample(self) -> SACBatch:
        self._sync()
        torch.randint(
            0, len(self.buffer), (self.batch_size,), generator=self.generator, out=self._idx
        )
        idx = self._idx if self._shares_memory else self._idx.to(self.device, non_blocking=True)
        out = self._out
        for k, src in self._src.items():
            torch.index_select(src, 0, idx, out=out[k])
        torch.sub(1.0, out["terminations"].to(self._masks.dtype), out=self._masks)
        return SACBatch(
            out["observations"],
            out["actions"],
            out["rewards"],
            out["next_observations"],
            self._masks,
        )
