"""Every random stream's seed, derived in one visible place from a run's seed and a purpose.

`derive_seed(seed, purpose, index)` hashes all three (numpy's SeedSequence), so streams are
unrelated across purposes and across run seeds: run seed s never hands its minibatch sampler
the number that run seed s + 1 gives its agent, as `seed + 1` offsets did. Each purpose is
listed below with what it drives; an unlisted purpose is a programming error.
"""

from __future__ import annotations

import zlib

import numpy as np

PURPOSES: dict[str, str] = {
    "env": "the real env's reset of a run (collect, MBPO, random buffer)",
    "exploration": "per-step exploration noise (uniform random phase, Gaussian policy noise)",
    "sac": "SAC's sampling on its device (actions, entropy); network init derives from it",
    "sac/init": "SAC's network initialisation",
    "collect/minibatches": "the collector's SAC minibatch draws",
    "mbpo/minibatches": "MBPO's mixed real/model minibatch draws",
    "mbpo/starts": "rows where model rollouts start",
    "mbpo/rollout": "the model's sampled next states in rollouts",
    "mbpo/eval": "test episodes' resets (index: the env step they are run at)",
    "model_fit": "holdout split, initialisation and minibatches of a dynamics-model fit",
    "tom/q": "the dual-RL Q network's initialisation",
    "tom/q_batches": "the dual-RL Q network's minibatches and next actions",
    "tom/q_readout": "the a' draws shared by every convergence check of a one-off dual fit",
    "tom/discriminator": "one round's discriminator (index: the round)",
    "offline/eval": "a collect run's fresh on-policy episodes of a snapshot (index: the snapshot)",
    "offline/cell": "an offline-study cell's model fit and learner (collect run seed; index: "
    "the model seed)",
    "finite/recovery": "random finite MDPs of claim C5",
    "finite/bound": "random finite MDPs of claim C6",
    "finite/estimator": "C5 estimator: one MDP's seed, also its fits' (index: the MDP)",
    "finite/convergence": "C5 convergence table: one MDP's seed (index: the MDP)",
    "finite/estimator/problem": "C5 estimator: an MDP, its policies and replay mixture",
    "finite/estimator/buffer": "C5 estimator: a buffer's rows and mu0 draws (index: its size N)",
    "finite/model_fit": "C6 model fit: one MDP, its state aggregation and its samples "
    "(index: the MDP)",
    "finite/model_fit/weights": "C6 model fit: an extra weight source's draws, e.g. the "
    "dual-RL estimator (index: the MDP)",
    "analysis/bootstrap": "bootstrap resamples of the claims",
    "planner": "the synthetic data, networks and actions `tomrepro plan` times (only their sizes "
    "matter)",
}


def derive_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 63-bit seed for stream `purpose` (and `index`: round, step, snapshot) of run `seed`."""
    if purpose not in PURPOSES:
        raise KeyError(f"unknown seed purpose {purpose!r}; add it to PURPOSES")
    if seed < 0 or index < 0:
        raise ValueError("seeds and indices are non-negative")
    entropy = [int(seed), zlib.crc32(purpose.encode()), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))
