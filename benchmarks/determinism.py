"""Are runs on this device deterministic, and is a run in a population the run alone?

Runs a short smoke-profile MBPO population (MLE and TOM, seeds 0 and 1) twice on the device and
each run once alone, and compares curves (timing columns aside), buffers and policy snapshots
bit for bit; where they differ, it prints the largest difference of each. On CPU every answer
must be "identical" (the tests check the same); on a GPU this is the measurement the README's
"whether GPU runs are deterministic" waits for.

Run: `python benchmarks/determinism.py [--device auto] [--env-steps 600]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tomrepro.core.buffer_file import read_buffer, read_snapshot
from tomrepro.core.config import load_profile, with_overrides
from tomrepro.learning.devices import resolve_device
from tomrepro.loops.mbpo import TIMING_COLUMNS, MBPORun
from tomrepro.loops.mbpo_population import run_population

RUNS = (("mle", 0), ("tom", 0), ("mle", 1), ("tom", 1))


def _arrays(root: Path) -> dict[str, np.ndarray]:
    curve = pd.read_csv(root / "curve.csv").drop(columns=list(TIMING_COLUMNS))
    out = {f"curve/{c}": curve[c].to_numpy() for c in curve.columns}
    read = read_buffer(root / "buffer.h5")
    out.update({f"buffer/{k}": v for k, v in read.buffer.columns().items()})
    versions = int(read.buffer.columns()["policy_versions"].max())
    for key, tensor in read_snapshot(root / "buffer.h5", versions).tensors.items():
        out[f"snapshot/{key}"] = tensor
    return out


def difference(a: Path, b: Path) -> str:
    """'identical', or the arrays that differ with their largest absolute difference."""
    x, y = _arrays(a), _arrays(b)
    if x.keys() != y.keys():
        return f"different arrays: {sorted(x.keys() ^ y.keys())}"
    differ = []
    for name in x:
        u, v = x[name], y[name]
        if u.shape != v.shape:
            differ.append(f"{name} shape {u.shape} vs {v.shape}")
        elif not np.array_equal(u, v, equal_nan=True):
            gap = np.nanmax(np.abs(u.astype(np.float64) - v.astype(np.float64)))
            differ.append(f"{name} max |diff| {gap:.3g}")
    return "identical" if not differ else "; ".join(differ[:6])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--env-steps", type=int, default=600)
    args = parser.parse_args()
    device = str(resolve_device(args.device))
    profile = with_overrides(load_profile("smoke"), "mbpo", env_steps=args.env_steps)

    def runs(root: Path) -> list[MBPORun]:
        return [
            MBPORun(
                profile,
                root / f"{m}_s{s}",
                learner=m,
                seed=s,
                device=device,
                progress=False,
            )
            for m, s in RUNS
        ]

    with tempfile.TemporaryDirectory() as tmp:
        first, second, alone = (Path(tmp) / name for name in ("first", "second", "alone"))
        run_population(runs(first))
        run_population(runs(second))
        for run in runs(alone):
            run.run()
        print(f"device {device}; smoke MBPO, {args.env_steps} env steps, runs {RUNS}")
        for m, s in RUNS:
            name = f"{m}_s{s}"
            print(f"  {name}: population twice: {difference(first / name, second / name)}")
            print(f"  {name}: population vs alone: {difference(first / name, alone / name)}")


if __name__ == "__main__":
    main()
