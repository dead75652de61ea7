"""`tomrepro weights`: per-transition weights for the data that existed at a policy snapshot."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from tomrepro.core.atomic import atomic_path, make_parent, write_bytes_atomic
from tomrepro.core.buffer_file import content_digest, read_buffer, read_snapshot
from tomrepro.core.config import ProfileConfig, with_overrides
from tomrepro.core.errors import TomreproError
from tomrepro.core.learners import get_learner
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.model_learners import learner_fingerprint, plan_for_snapshot
from tomrepro.learning.sac import SquashedGaussianActor
from tomrepro.learning.tom_weights import weight_summary


def compute_weights(
    profile: ProfileConfig,
    buffer_path: Path,
    snapshot: int,
    learner: str,
    out: Path,
    *,
    divergence: str | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> Path:
    """Weights for the prefix before snapshot `snapshot`'s env step, under that snapshot's policy.

    Writes `out` (.npz with `weights` and the rows' `env_steps`) and `out` with suffix `.json`
    (diagnostics). `weights` feeds `tomrepro train-model --weights` with
    `--prefix-end` set to the snapshot's env step (it has one entry per row of that prefix).
    """
    if out.suffix == ".json":
        raise TomreproError(f"--out {out}: the diagnostics go to a .json beside it; use .npz")
    get_learner(learner)
    profile = with_overrides(profile, "tom", divergence=divergence)
    seed = profile.seed if seed is None else seed
    loaded = read_buffer(buffer_path)
    env_step = loaded.snapshot_step(snapshot)
    prefix = loaded.buffer.prefix(env_step)
    cols = prefix.columns()
    start = time.perf_counter()
    actor = SquashedGaussianActor.from_tensors(read_snapshot(buffer_path, snapshot).tensors)
    device_ = resolve_device(device or profile.device)
    plan = plan_for_snapshot(learner, profile, cols, actor, snapshot, seed, device_)
    weights = plan.weights_or_uniform(len(prefix))
    diagnostics: dict[str, object] = {"rows": len(prefix), **weight_summary(weights)}
    diagnostics.update(plan.diagnostics)
    report = {
        "learner": learner_fingerprint(learner, profile),
        "snapshot": snapshot,
        "env_step": env_step,
        "buffer": str(buffer_path),
        "buffer_digest": content_digest(buffer_path),
        "seed": seed,
        "seconds": time.perf_counter() - start,
        **diagnostics,
    }
    make_parent(out)
    packed = io.BytesIO()
    np.savez(packed, weights=weights, env_steps=cols["env_steps"])
    write_bytes_atomic(out, packed.getvalue())
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return out
