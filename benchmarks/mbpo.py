"""MBPO speed: env steps per minute of MBPO-MLE and MBPO-TOM on Hopper-v5 under both SAC update
schedules, in the same run.

Each learner runs MBPO's own settings on the default profile's networks (SAC bursts of 20
updates: `official` caps them at 5 updates per epoch-local step, TOM's train_policy_repeats;
`every_step` runs one after every env step; a model round every 250 steps with 100 000 rollouts,
10 test episodes per 1000-step epoch) through the random phase and one warm-up epoch; the figures
cover the `--epochs` epochs after that (model training, rollouts, TOM's estimator, evaluation and
SAC updates; checkpoint writing excluded). Prints steps per minute, the share of time per phase,
and the TOM/MLE time ratio per schedule.

Run: `python benchmarks/mbpo.py [--epochs 1] [--device auto] [--learners mle,tom]
[--schedules official,every_step]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from tomrepro.core.config import load_profile, with_overrides
from tomrepro.loops.mbpo import PHASES, MBPORun


def measure(
    learner: str, schedule: str, epochs: int, random_steps: int, device: str, out: Path
) -> dict[str, float]:
    epoch_length = 1000
    profile = with_overrides(
        load_profile("default"),
        "mbpo",
        env_steps=random_steps + (1 + epochs) * epoch_length,
        random_steps=random_steps,
        tasks=["Hopper-v5"],
        epoch_length=epoch_length,
        update_schedule=schedule,
        updates_per_step=20,
        max_updates_per_step=5,
    )
    assert profile.mbpo is not None
    # None means "keep" to with_overrides; MBPO has no per-round batch cap.
    cfg = profile.mbpo.model_copy(update={"model_batches_per_epoch": None})
    profile = profile.model_copy(update={"mbpo": cfg})
    MBPORun(profile, out, learner=learner, device=device, progress=True).run()  # type: ignore[arg-type]
    curve = pd.read_csv(out / "curve.csv")
    window = curve[curve["env_step"] > cfg.random_steps + cfg.epoch_length]
    seconds = {k: float(window[f"seconds_{k}"].sum()) for k in PHASES}
    steps = float(window["env_step"].iloc[-1] - window["env_step"].iloc[0] + cfg.epoch_length)
    wall = sum(seconds.values())
    return {"steps": steps, "wall": wall, "per_minute": 60 * steps / wall, **seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--random-steps", type=int, default=5000, help="MBPO's Hopper setting.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--learners", default="mle,tom")
    parser.add_argument("--schedules", default="official,every_step")
    args = parser.parse_args()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    results = {}
    schedules = args.schedules.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for schedule in schedules:
            for learner in args.learners.split(","):
                results[learner, schedule] = measure(
                    learner,
                    schedule,
                    args.epochs,
                    args.random_steps,
                    device,
                    Path(tmp) / f"{learner}_{schedule}",
                )
    for (learner, schedule), r in results.items():
        shares = "  ".join(f"{k} {100 * r[k] / r['wall']:.1f}%" for k in PHASES if r[k] > 0)
        print(
            f"MBPO-{learner.upper():<6} {schedule:<10} {r['per_minute']:7.1f} env steps/min "
            f"({r['steps']:.0f} steps in {r['wall']:.1f} s)  {shares}"
        )
    for schedule in schedules:
        if ("mle", schedule) in results and ("tom", schedule) in results:
            ratio = results["tom", schedule]["wall"] / results["mle", schedule]["wall"]
            print(f"{schedule}: TOM/MLE time ratio {ratio:.3f}")
    if all(("mle", s) in results for s in ("official", "every_step")):
        speedup = results["mle", "every_step"]["wall"] / results["mle", "official"]["wall"]
        print(f"MLE: official schedule is {speedup:.2f}x faster per env step than every_step")


if __name__ == "__main__":
    main()
