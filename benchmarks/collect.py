"""Collection speed, side by side in one run (CPU; CUDA too when present).

1. raw `env.step` rate with uniform-random actions;
2. the collector's own loop acting with a policy snapshot, no SAC updates (`updates_per_step: 0`):
   acting (numpy forward + noise lookup), stepping and writing each row into the buffer;
3. SAC updates per second (256 x 256, batch 256) on the same task's dimensions.

Run: `python benchmarks/collect.py [--task Hopper-v5] [--steps 20000] [--updates 500]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tomrepro.core.config import load_profile, with_overrides
from tomrepro.core.tasks import get_task
from tomrepro.learning.sac import SAC, MinibatchSampler
from tomrepro.loops.collect import Collector
from tomrepro.loops.rollout import random_rollout

PROFILES = Path(__file__).resolve().parents[1] / "pipelines"


def raw_env_rate(task_id: str, steps: int) -> float:
    task = get_task(task_id)
    env = task.make_env()
    rng = np.random.default_rng(0)
    actions = rng.uniform(env.action_space.low, env.action_space.high, (steps, task.act_dim))
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def inference_collection_rate(task_id: str, steps: int) -> tuple[float, float]:
    """Env steps/s of the collector loop (its 'env' phase), and of the whole run with writes."""
    profile = with_overrides(
        load_profile("default", PROFILES),
        "collect",
        task=task_id,
        env_steps=steps,
        random_steps=0,
        snapshot_every=steps,
        updates_per_step=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        collector = Collector(profile, Path(tmp) / "run", device="cpu", progress=False)
        start = time.perf_counter()
        collector.run()
        total = time.perf_counter() - start
    return steps / collector.timings["env"], steps / total


def sac_update_ms(task_id: str, device: torch.device, updates: int) -> float:
    task = get_task(task_id)
    buffer = random_rollout(task, 5000, seed=0)
    cfg = load_profile("default", PROFILES).sac
    low, high = -np.ones(task.act_dim, np.float32), np.ones(task.act_dim, np.float32)
    sac = SAC(task.obs_dim, task.act_dim, low, high, cfg, device, torch.Generator().manual_seed(0))
    sampler = MinibatchSampler(buffer, cfg.batch_size, device, torch.Generator().manual_seed(1))
    for _ in range(50):
        sac.update(sampler.sample())
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(updates):
        sac.update(sampler.sample())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / updates * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=500)
    args = parser.parse_args()

    print(f"task {args.task}, torch threads {torch.get_num_threads()}")
    raw = raw_env_rate(args.task, args.steps)
    loop, whole = inference_collection_rate(args.task, args.steps)
    print(f"raw env.step, random actions     {raw:>9.0f} steps/s")
    print(f"collector, policy inference only {loop:>9.0f} steps/s   ratio to raw {loop / raw:.2f}")
    print(f"  same, with setup and file write {whole:>8.0f} steps/s")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        ms = sac_update_ms(args.task, device, args.updates)
        print(f"SAC update 256x256, batch 256, {device.type:<4} {ms:>6.2f} ms  ({1e3 / ms:.0f}/s)")


if __name__ == "__main__":
    main()
