"""Soft actor-critic, the backbone's agent (Haarnoja et al. 2018; the official TOM/MBPO variant).

Twin critics are one `BatchedMLP` with two members, so both are evaluated in a single batched op;
targets are updated with one fused `_foreach_lerp_`. Each critic's MSE is clamped at
`critic_loss_clamp` before summing, as in the official code. The temperature used in an update is
the one from before it (the official code's order).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.config import SACConfig
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.networks import BatchedMLP

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_SQUASH_EPS = 1e-6
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SquashedGaussianActor(nn.Module):
    """pi(a|s): a Gaussian in pre-tanh space, squashed by tanh and scaled to the action bounds."""

    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: np.ndarray, high: np.ndarray
    ) -> None:
        super().__init__()
        self.net = BatchedMLP(1, obs_dim, hidden, 2 * act_dim)
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
        """(B, obs) -> mean, log_std, each (B, act), pre-squash."""
        mean, log_std = self.net(obs.unsqueeze(0))[0].chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Action for given standard-normal `noise` (B, act); noise = 0 gives the mean action."""
        mean, log_std = self.distribution(obs)
        return torch.tanh(mean + log_std.exp() * noise) * self.action_scale + self.action_bias

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action (B, act) and its log-probability (B,)."""
        mean, log_std = self.distribution(obs)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        squashed = torch.tanh(mean + log_std.exp() * noise)
        log_prob = -0.5 * noise.square() - log_std - _HALF_LOG_2PI
        log_prob = log_prob - torch.log(self.action_scale * (1 - squashed.square()) + _SQUASH_EPS)
        return squashed * self.action_scale + self.action_bias, log_prob.sum(-1)


class TwinCritic(nn.Module):
    """Q1, Q2 as one two-member network: (B, obs), (B, act) -> (2, B)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = BatchedMLP(2, obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat((obs, act), dim=-1)  # (B, obs + act)
        return self.net(x.unsqueeze(0).expand(2, -1, -1)).squeeze(-1)


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
    """Actor, twin critics with targets, automatic entropy tuning, and their optimisers.

    `generator` lives on `device` and drives all sampling; initial weights come from a CPU
    generator with the same seed, so they do not depend on the device.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        cfg: SACConfig,
        device: torch.device,
        generator: torch.Generator,
    ) -> None:
        self.cfg, self.device, self.generator = cfg, device, generator
        hidden = tuple(cfg.hidden_sizes)
        self.actor = SquashedGaussianActor(obs_dim, act_dim, hidden, action_low, action_high)
        self.critic = TwinCritic(obs_dim, act_dim, hidden)
        init = torch.Generator().manual_seed(derive_seed(int(generator.initial_seed()), "sac/init"))
        self.actor.net.reset_parameters(init)
        self.critic.net.reset_parameters(init)
        self.critic_target = TwinCritic(obs_dim, act_dim, hidden)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        for module in (self.actor, self.critic, self.critic_target):
            module.to(device)
        self.log_alpha = torch.zeros(1, device=device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr, fused=True)
        self._actor_params: list[torch.Tensor] = list(self.actor.parameters())
        self._online: list[torch.Tensor] = list(self.critic.parameters())
        self._targets: list[torch.Tensor] = list(self.critic_target.parameters())

    def update(self, batch: SACBatch) -> torch.Tensor:
        """One SAC step; returns [critic loss, actor loss, alpha, entropy] as a detached tensor."""
        cfg = self.cfg
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(batch.next_observations, self.generator)
            next_q = self.critic_target(batch.next_observations, next_action).amin(0)
            target = batch.rewards + cfg.gamma * batch.masks * (next_q - alpha * next_log_prob)
        q = self.critic(batch.observations, batch.actions)  # (2, B)
        critic_loss = (q - target).square().mean(1).clamp_max(cfg.critic_loss_clamp).sum()
        self.critic_opt.zero_grad(set_to_none=False)
        critic_loss.backward()
        self.critic_opt.step()

        action, log_prob = self.actor.sample(batch.observations, self.generator)
        actor_loss = (alpha * log_prob - self.critic(batch.observations, action).amin(0)).mean()
        self.actor_opt.zero_grad(set_to_none=False)
        actor_loss.backward(inputs=self._actor_params)  # no gradient into the critic's weights
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=False)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(self._targets, self._online, cfg.tau)
        return torch.stack(
            (critic_loss.detach(), actor_loss.detach(), alpha[0], -log_prob.detach().mean())
        )

    def actor_arrays(self) -> dict[str, np.ndarray]:
        """A CPU copy of the actor's tensors: what a policy snapshot stores."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.actor.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Optimiser state tensors (e.g. Adam's step counter) are loaded by reference; a private
        # copy keeps two agents restored from one in-memory state from sharing them.
        state = copy.deepcopy(state)
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.generator.set_state(state["generator"])


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
