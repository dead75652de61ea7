"""A learned dynamics model p(s' - s, r | s, a): network, normalisation, elites, save/load.

Inputs are [s, a] and targets [s' - s, r], both standardised with statistics of the training split;
all losses are in those standardised units. Prediction averages the elite members' means;
sampling picks an elite per row, as MBPO does.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tomrepro.core.config import ModelConfig
from tomrepro.core.errors import TomreproError
from tomrepro.learning.dynamics_networks import GaussianEnsemble, MixtureDensityNetwork
from tomrepro.learning.serialization import load_tensors, save_tensors

MODEL_FORMAT = "tomrepro.dynamics_model/1"
# Rows per forward pass: each layer's (E, rows, width) activations then stay in cache; one pass
# over 100 000 rows would stream ~0.5 GB per layer through memory and run about half as fast.
FORWARD_CHUNK = 2048


def model_inputs(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    return np.concatenate((obs, act), axis=-1).astype(np.float32)


def model_targets(obs: np.ndarray, next_obs: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    return np.concatenate((next_obs - obs, rewards[:, None]), axis=-1).astype(np.float32)


class DynamicsModel(nn.Module):
    """Network plus the standardisation and elite set it was trained with."""

    input_mean: torch.Tensor
    input_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor
    elites: torch.Tensor
    deterministic: torch.Tensor

    def __init__(self, cfg: ModelConfig, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        in_dim, out_dim = obs_dim + act_dim, obs_dim + 1
        self.net: GaussianEnsemble | MixtureDensityNetwork
        if cfg.family == "ensemble":
            self.net = GaussianEnsemble(cfg.ensemble_size, in_dim, out_dim, cfg.hidden_sizes)
        else:
            self.net = MixtureDensityNetwork(in_dim, out_dim, cfg.hidden_sizes, cfg.components)
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))
        self.register_buffer("target_mean", torch.zeros(out_dim))
        self.register_buffer("target_std", torch.ones(out_dim))
        self.register_buffer("elites", torch.arange(cfg.elites))
        # Fitted by a squared error of the mean (VaGraM): its variance heads were never trained.
        self.register_buffer("deterministic", torch.zeros((), dtype=torch.bool))

    @property
    def members(self) -> int:
        return self.net.members

    def fit_normalization(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Standardisation from training data; constant dimensions keep scale 1."""
        for name, data in (("input", inputs), ("target", targets)):
            mean, std = data.mean(0), data.std(0)
            std[std < 1e-6] = 1.0
            getattr(self, f"{name}_mean").copy_(torch.from_numpy(mean))
            getattr(self, f"{name}_std").copy_(torch.from_numpy(std))

    def normalize_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def normalize_targets(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.target_mean) / self.target_std

    def _per_member(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Row chunks of normalised inputs (N, in), each expanded to (E, chunk, in)."""
        return [c.unsqueeze(0).expand(self.members, -1, -1) for c in x.split(FORWARD_CHUNK)]

    @torch.no_grad()
    def nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) rows (N, in), (N, out) -> standardised NLL per member (E, N)."""
        xs = self._per_member(self.normalize_inputs(inputs))
        ys = self.normalize_targets(targets).split(FORWARD_CHUNK)
        return torch.cat(
            [self.net.nll(x, y.unsqueeze(0)) for x, y in zip(xs, ys, strict=True)], dim=1
        )

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Elite-mean prediction: next observation (N, obs) and reward (N,)."""
        x = self.normalize_inputs(torch.cat((obs, act), dim=-1))
        mean = torch.cat([self.net.mean(c)[self.elites].mean(0) for c in self._per_member(x)])
        delta = mean * self.target_std + self.target_mean
        return obs + delta[:, :-1], delta[:, -1]

    @torch.no_grad()
    def sample(
        self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw per row from a uniformly chosen elite (its mean if the model is
        deterministic): next observation and reward."""
        x = self.normalize_inputs(torch.cat((obs, act), dim=-1))
        draw = (
            self.net.mean
            if bool(self.deterministic)
            else partial(self.net.sample, generator=generator)
        )
        draws = torch.cat([draw(c) for c in self._per_member(x)], dim=1)
        pick = torch.randint(
            0, len(self.elites), (obs.shape[0],), generator=generator, device=obs.device
        )
        delta = draws[self.elites[pick], torch.arange(obs.shape[0], device=obs.device)]
        delta = delta * self.target_std + self.target_mean
        return obs + delta[:, :-1], delta[:, -1]

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Tensors plus JSON metadata, atomically; load with `load_dynamics_model`."""
        payload = {
            "format": MODEL_FORMAT,
            "config": json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "state": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": json.dumps(extra or {}, sort_keys=True),
        }
        return save_tensors(payload, path)


def load_dynamics_model(
    path: str | os.PathLike[str], device: torch.device | None = None
) -> tuple[DynamicsModel, dict[str, Any]]:
    """A saved model and its extra metadata; malformed files are a one-line error."""
    path = Path(path)
    payload = load_tensors(path, "dynamics model")
    try:
        if payload.get("format") != MODEL_FORMAT:
            raise ValueError(f"format {payload.get('format')!r}")
        cfg = ModelConfig.model_validate(json.loads(payload["config"]))
        model = DynamicsModel(cfg, int(payload["obs_dim"]), int(payload["act_dim"]))
        model.load_state_dict(payload["state"])
    except Exception as exc:  # any key, type or shape problem means: not our model file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TomreproError(f"{path}: not a tomrepro dynamics model ({reason})") from None
    if device is not None:
        model.to(device)
    return model, json.loads(payload["extra"])
