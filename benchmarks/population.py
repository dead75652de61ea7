"""Populations of R runs in one process against single runs: the SAC update alone, then whole
MBPO runs.

1. SAC updates (the online loop's largest phase: 5 per env step on average at the official
   schedule): milliseconds of one population update, updates per second per run and in
   aggregate, against R single-run updates one after another. Hopper's sizes, 256 x 256, batch 256.
2. Model fits (a model round of R runs): one stacked fit of R models (`train_fits`, the
   profile's model: the official MDN, 200 x 4) on their own data, against the same R fits one
   after another; milliseconds per minibatch step of the whole round.
3. MBPO runs of Hopper (`--mbpo-steps` env steps each, the default profile's networks and the
   official schedule; `--rollout-batch` model rollouts per round, 10 000 here against MBPO's
   100 000 to keep the benchmark short; TOM's D^pi a quarter of the run, so that its second
   round runs), half MLE and half TOM, seeds 0..R-1: env steps per
   second per run and in aggregate and the share of time per phase, for R runs stepped three
   ways: a batched population (the GPU's way; on the process's torch threads), a population of
   runs each alone on its own thread (the CPU's way; one torch thread each, a thread per core),
   and separate processes (one per CPU core, one torch thread each).

Run: `python benchmarks/population.py [--sizes 1 4 16 32] [--fit-sizes 1 4 16 32]
[--mbpo-sizes 1 2 4] [--device auto]`.
CUDA graphs are not built yet; on a GPU this measures the eager CUDA path.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from tomrepro.core.config import (
    ModelConfig,
    ProfileConfig,
    SACConfig,
    load_profile,
    with_overrides,
)
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.dynamics_model import DynamicsModel
from tomrepro.learning.model_training import FitJob, prepare_fit, train_fits
from tomrepro.learning.reference_speed import sac_update_ms
from tomrepro.learning.sac import SAC, SACBatch
from tomrepro.loops.mbpo import PHASES, MBPORun, run_status
from tomrepro.loops.mbpo_population import run_population
from tomrepro.loops.planner import torch_threads

OBS_DIM, ACT_DIM, BATCH = 11, 3, 256


def _batch(runs: int, device: torch.device, seed: int) -> SACBatch:
    g = torch.Generator().manual_seed(seed)
    shape = (runs, BATCH)
    return SACBatch(
        torch.randn((*shape, OBS_DIM), generator=g).to(device),
        (torch.rand((*shape, ACT_DIM), generator=g) * 2 - 1).to(device),
        torch.randn(shape, generator=g).to(device),
        torch.randn((*shape, OBS_DIM), generator=g).to(device),
        torch.ones(shape).to(device),
    )


def _agent(runs: int, device: torch.device) -> SAC:
    cfg = SACConfig(hidden_sizes=(256, 256), batch_size=BATCH)
    generators = [torch.Generator(device=device).manual_seed(r) for r in range(runs)]
    return SAC(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM), cfg, device, generators)


def seconds_per_update(runs: int, device: torch.device, seconds: float) -> float:
    """Median wall seconds of one update of a population of `runs`, over about `seconds`."""
    agent, batch = _agent(runs, device), _batch(runs, device, 0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        agent.update(batch)
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        tick = time.perf_counter()
        agent.update(batch)
        sync()
        times.append(time.perf_counter() - tick)
    return float(np.median(times))


def _fit_jobs(runs: int, cfg: ModelConfig, rows: int, steps: int) -> list[FitJob]:
    jobs = []
    for r in range(runs):
        g = torch.Generator().manual_seed(r)
        inputs = torch.randn((rows, OBS_DIM + ACT_DIM), generator=g).numpy()
        targets = torch.randn((rows, OBS_DIM + 1), generator=g).numpy()
        jobs.append(FitJob(DynamicsModel(cfg, OBS_DIM, ACT_DIM), inputs, targets, None, g,
                           max_epochs=1, batches_per_epoch=steps))  # fmt: skip
    return jobs


def seconds_per_fit_step(runs: int, device: torch.device, stacked: bool, steps: int) -> float:
    """Wall seconds per minibatch step of a round of `runs` model fits (one epoch of `steps`
    steps each, 2000 rows), stacked or one after another; the second of two rounds."""
    cfg = load_profile("default").model
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds = 0.0
    for _ in range(2):
        jobs = _fit_jobs(runs, cfg, 2000, steps)
        sync()
        tick = time.perf_counter()
        if stacked:
            train_fits([prepare_fit(job, device) for job in jobs])
        else:
            for job in jobs:
                train_fits([prepare_fit(job, device)])
        sync()
        seconds = time.perf_counter() - tick
    return seconds / steps


def mbpo_profile(steps: int, rollout_batch: int) -> ProfileConfig:
    """Model rounds at a half and three quarters of the run; TOM's D^pi shrunk to a quarter of
    it, so that TOM's second round runs (its own network sizes and step counts unchanged)."""
    profile = with_overrides(
        load_profile("default"),
        "mbpo",
        tasks=["Hopper-v5"],
        env_steps=steps,
        random_steps=steps // 2,
        epoch_length=steps // 2,
        model_train_every=steps // 4,
        rollout_batch=rollout_batch,
        eval_episodes=2,
    )
    return with_overrides(profile, "tom", recent_size=steps // 4)


def _runs(profile: ProfileConfig, count: int, root: Path, device: str) -> list[MBPORun]:
    return [
        MBPORun(
            profile,
            root / f"r{r}",
            learner=("mle", "tom")[r % 2],
            seed=r,
            device=device,
            progress=False,
        )
        for r in range(count)
    ]


def _alone(profile: ProfileConfig, root: Path, r: int, device: str) -> None:
    torch.set_num_threads(1)
    _runs(profile, r + 1, root, device)[r].run()


def mbpo_population(count: int, profile: ProfileConfig, device: str, how: str) -> dict:
    """Wall seconds of `count` runs stepped `how` ("batched", "threads" or "processes"), and
    the phase seconds summed over the runs."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tick = time.perf_counter()
        if how == "processes":
            with ProcessPoolExecutor(max_workers=min(count, os.cpu_count() or 1)) as pool:
                args = ([profile] * count, [root] * count, range(count), [device] * count)
                list(pool.map(_alone, *args))
        else:
            with torch_threads(1 if how == "threads" else None):
                run_population(_runs(profile, count, root, device), batched=how == "batched")
        wall = time.perf_counter() - tick
        phases = dict.fromkeys(PHASES, 0.0)
        for r in range(count):
            for k, v in ((run_status(root / f"r{r}") or {})["summary"]["seconds"]).items():
                phases[k] += v
    return {"wall": wall, "phases": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fit-sizes", type=int, nargs="*", default=[1, 4, 16, 32])
    parser.add_argument("--fit-steps", type=int, default=20)
    parser.add_argument("--mbpo-sizes", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--mbpo-steps", type=int, default=500)
    parser.add_argument("--rollout-batch", type=int, default=10_000)
    parser.add_argument(
        "--ways",
        nargs="+",
        choices=["batched", "threads", "processes"],
        default=None,
        help="How to step the MBPO runs (default: all three on CPU, batched on a GPU).",
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(
        f"device {device}, {torch.get_num_threads()} threads; reference SAC update "
        f"{sac_update_ms():.1f} ms (CPU, one run)"
    )
    single = seconds_per_update(1, device, args.seconds)
    print(f"{'R':>4}{'ms/update':>11}{'upd/s/run':>11}{'upd/s all':>11}{'vs R singles':>14}")
    for runs in args.sizes:
        t = single if runs == 1 else seconds_per_update(runs, device, args.seconds)
        print(
            f"{runs:>4}{1000 * t:>11.2f}{1 / t:>11.1f}{runs / t:>11.1f}{runs * single / t:>13.2f}x"
        )
    print("vs R singles: R single-run updates one after another / one population update")
    if args.fit_sizes:
        steps = args.fit_steps
        print(f"\nmodel fits (default profile's model), {steps} minibatch steps per fit")
        print(f"{'R':>4}{'ms/step stacked':>17}{'ms/step one by one':>20}{'speed-up':>10}")
        for runs in args.fit_sizes:
            stacked = seconds_per_fit_step(runs, device, True, steps)
            serial = seconds_per_fit_step(runs, device, False, steps)
            print(
                f"{runs:>4}{1000 * stacked:>17.2f}{1000 * serial:>20.2f}{serial / stacked:>9.2f}x"
            )
    if not args.mbpo_sizes:
        return
    profile = mbpo_profile(args.mbpo_steps, args.rollout_batch)
    steps = args.mbpo_steps
    print(f"\nMBPO, Hopper, {steps} env steps per run (half random), runs alternate MLE / TOM")
    head = f"{'R':>4} {'how':<12}{'wall s':>8}{'steps/s/run':>13}{'steps/s all':>13}  phases"
    print(head)
    ways = args.ways or ["batched"] + (["threads", "processes"] if device.type == "cpu" else [])
    for runs in args.mbpo_sizes:
        for how in ways:
            r = mbpo_population(runs, profile, str(device), how)
            total = sum(r["phases"].values()) or 1.0
            shares = " ".join(f"{k} {100 * v / total:.0f}%" for k, v in r["phases"].items() if v)
            print(
                f"{runs:>4} {how:<12}{r['wall']:>8.1f}{steps / r['wall']:>13.1f}"
                f"{runs * steps / r['wall']:>13.1f}  {shares}"
            )


if __name__ == "__main__":
    main()
