"""Dynamics-ensemble speed (CPU; CUDA too when present), printed side by side.

- Adam steps per second, 7 members x (4 x 200 SiLU), batch 256 per member, Hopper sizes: the
  member-batched `GaussianEnsemble` (one bmm per layer) beside a plain Python loop over 7 separate
  MLPs with their own optimisers;
- the 7-member forward pass on 100 000 inputs (MBPO's rollout batch);
- achieved GFLOP/s, beside a large single matmul as the reference for what the cores can do;
- with --fit: epochs per fit (early stopping) on a real Hopper buffer.

Run: `python benchmarks/model_train.py [--steps 200] [--fit]`.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch
from torch import nn

from tomrepro.core.config import ModelConfig
from tomrepro.core.tasks import get_task
from tomrepro.learning.dynamics_model import DynamicsModel
from tomrepro.learning.dynamics_networks import GaussianEnsemble
from tomrepro.learning.model_training import fit_on_columns
from tomrepro.loops.rollout import random_rollout

MEMBERS, HIDDEN, BATCH = 7, (200, 200, 200, 200), 256
IN_DIM, OUT_DIM = 11 + 3, 11 + 1  # Hopper: [s, a] -> [s' - s, r]


def flops_per_sample() -> int:
    widths = [IN_DIM, *HIDDEN, 2 * OUT_DIM]
    return 2 * sum(a * b for a, b in itertools.pairwise(widths))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps: int, device: torch.device) -> float:
    for _ in range(10):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def batched_step_seconds(device: torch.device, steps: int) -> float:
    net = GaussianEnsemble(MEMBERS, IN_DIM, OUT_DIM, HIDDEN).to(device)
    net.reset_parameters(torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    x = torch.randn(MEMBERS, BATCH, IN_DIM, device=device)
    y = torch.randn(MEMBERS, BATCH, OUT_DIM, device=device)

    def step() -> None:
        loss = net.nll(x, y).mean(1).sum() + net.regularizer()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    return timed(step, steps, device)


def looped_step_seconds(device: torch.device, steps: int) -> float:
    def mlp() -> nn.Module:
        widths = [IN_DIM, *HIDDEN]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.SiLU()]
        return nn.Sequential(*layers, nn.Linear(HIDDEN[-1], 2 * OUT_DIM)).to(device)

    nets = [mlp() for _ in range(MEMBERS)]
    opts = [torch.optim.Adam(n.parameters(), lr=1e-3, fused=True) for n in nets]
    x = torch.randn(MEMBERS, BATCH, IN_DIM, device=device)
    y = torch.randn(MEMBERS, BATCH, OUT_DIM, device=device)

    def step() -> None:
        for i, (net, opt) in enumerate(zip(nets, opts, strict=True)):
            mean, logvar = net(x[i]).chunk(2, dim=-1)
            loss = 0.5 * ((mean - y[i]).square() * torch.exp(-logvar) + logvar).sum(-1).mean()
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()

    return timed(step, steps, device)


def forward_seconds(device: torch.device, rows: int = 100_000) -> float:
    """`DynamicsModel.predict` on `rows` inputs: all 7 members, elite mean (the rollout path)."""
    model = DynamicsModel(ModelConfig(), 11, 3).to(device)
    obs = torch.randn(rows, 11, device=device)
    act = torch.randn(rows, 3, device=device)
    return timed(lambda: model.predict(obs, act), 5, device)


def gemm_gflops(device: torch.device, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / timed(lambda: a @ b, 10, device) / 1e9


def fit_epochs(buffer_path: Path | None) -> None:
    if buffer_path is not None and buffer_path.exists():
        from tomrepro.core.buffer_file import read_buffer

        cols = read_buffer(buffer_path).buffer.columns()
        source = str(buffer_path)
    else:
        cols = random_rollout(get_task("Hopper-v5"), 20_000, seed=0).columns()
        source = "a 20 000-step random Hopper-v5 rollout"
    model = DynamicsModel(ModelConfig(), 11, 3)
    log = fit_on_columns(
        model,
        cols,
        None,
        torch.Generator().manual_seed(0),
        torch.device("cpu"),
    )
    print(
        f"fit on {source}: {len(cols['rewards'])} rows, {log.epochs} epochs "
        f"({log.gradient_steps} steps, best epochs {log.best_epoch}), {log.seconds:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--fit", action="store_true", help="Also time a full early-stopped fit.")
    parser.add_argument("--buffer", type=Path, default=Path("datasets/default/collect/buffer.h5"))
    args = parser.parse_args()
    step_flops = 3 * flops_per_sample() * BATCH * MEMBERS  # forward + backward ~ 3x forward
    print(
        f"ensemble {MEMBERS} x {HIDDEN}, batch {BATCH}/member; {step_flops / 1e9:.2f} GFLOP "
        f"per Adam step; torch threads {torch.get_num_threads()}"
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        batched = batched_step_seconds(device, args.steps)
        looped = looped_step_seconds(device, args.steps)
        forward = forward_seconds(device)
        peak = gemm_gflops(device)
        print(
            f"[{device.type}] Adam step: batched {batched * 1e3:6.2f} ms "
            f"({1 / batched:5.0f}/s), loop of {MEMBERS} MLPs {looped * 1e3:6.2f} ms "
            f"({1 / looped:5.0f}/s), loop/batched {looped / batched:.2f}"
        )
        print(
            f"[{device.type}] achieved {step_flops / batched / 1e9:6.1f} GFLOP/s batched, "
            f"{step_flops / looped / 1e9:6.1f} looped; a {2048}^2 matmul reaches "
            f"{peak:6.1f} GFLOP/s"
        )
        print(
            f"[{device.type}] forward, {MEMBERS} members x 100 000 inputs: {forward:.3f} s "
            f"({flops_per_sample() * 1e5 * MEMBERS / forward / 1e9:.1f} GFLOP/s)"
        )
    if args.fit:
        fit_epochs(args.buffer)


if __name__ == "__main__":
    main()
