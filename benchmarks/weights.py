"""TOM's overhead on top of MLE model learning, per round, on one 100k-transition Hopper buffer.

A TOM round = discriminator (400 steps) + dual-RL Q network (1000 steps) + weights for every
transition. An MLE round = fitting the 7-member ensemble for a fixed number of full passes over
the training split. MBPO retrains every 250 env steps from its previous weights and stops after
`patience` (5) epochs without a 1 % gain, so the shortest possible round is 6 epochs (one that
improves, five that do not): that is the default. The figure is (TOM round + MLE round) / MLE
round; the target is <= 1.3.

Run: `python benchmarks/weights.py [--rows 100000] [--mle-epochs 6]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tomrepro.core.config import ModelConfig, TOMConfig
from tomrepro.core.tasks import get_task
from tomrepro.learning.dynamics_model import DynamicsModel
from tomrepro.learning.model_training import fit_on_columns
from tomrepro.learning.sac import SquashedGaussianActor
from tomrepro.learning.tom_weights import estimate_tom_weights
from tomrepro.loops.rollout import random_rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mle-epochs", type=int, default=6)
    args = parser.parse_args()
    task = get_task("Hopper-v5")
    cols = random_rollout(task, args.rows, seed=0).columns()
    actor = SquashedGaussianActor(11, 3, (256, 256), -np.ones(3), np.ones(3))
    actor.net.reset_parameters(torch.Generator().manual_seed(0))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{args.rows} Hopper-v5 transitions, device {device}, threads {torch.get_num_threads()}")

    timings = {}
    for name, use_disc in (("tom", True), ("tom-nodisc", False)):
        start = time.perf_counter()
        estimate, _ = estimate_tom_weights(
            cols, actor, TOMConfig(), use_discriminator=use_disc, seed=0, device=device
        )
        timings[name] = time.perf_counter() - start
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in estimate.diagnostics["seconds"].items())
        print(
            f"{name:<11} round: {timings[name]:6.2f} s  ({parts}; ESS share "
            f"{estimate.diagnostics['effective_sample_share']:.2f})"
        )

    cfg = ModelConfig(max_epochs=args.mle_epochs, patience=args.mle_epochs + 1)
    model = DynamicsModel(cfg, 11, 3)
    start = time.perf_counter()
    log = fit_on_columns(
        model,
        cols,
        None,
        torch.Generator().manual_seed(0),
        device,
    )
    mle = time.perf_counter() - start
    print(f"MLE round:   {mle:6.2f} s  ({log.epochs} epochs, {log.gradient_steps} Adam steps)")
    for name, seconds in timings.items():
        print(f"({name} + MLE) / MLE = {(seconds + mle) / mle:.2f}")


if __name__ == "__main__":
    main()
