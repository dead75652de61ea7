"""The offline dual: `tom.q_steps` Adam steps from a fresh Q network vs training to the
convergence criterion (`tom.offline_convergence`), on one snapshot of a collected buffer.

Prints, for each: Q steps, whether the criterion was met, seconds of the weight estimate, and the
on-policy one-step state error of the TOM model fitted with those weights (the offline study's
cell, same seed); and the Spearman correlation between the two weight vectors.

Run: `python benchmarks/dual_convergence.py BUFFER --snapshot 10 [--profile default]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from tomrepro.core.buffer_file import read_metadata
from tomrepro.core.config import load_profile, profile_from_dict, with_overrides
from tomrepro.loops.offline_study import Cell, OfflineStudy, StudyPaths
from tomrepro.loops.weights_stage import compute_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("buffer", type=Path)
    parser.add_argument("--snapshot", type=int, default=10)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = load_profile(args.profile)
    base = with_overrides(
        base, "offline_study", snapshots=(args.snapshot,), learners=("tom",), seeds=(args.seed,)
    )
    raw = base.model_dump()
    raw["tom"]["offline_convergence"] = None  # the online round's fixed q_steps
    variants = {f"{base.tom.q_steps} steps": profile_from_dict(raw), "converged": base}
    weights = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, profile in variants.items():
            out = Path(tmp) / name.replace(" ", "_")
            OfflineStudy(profile, args.buffer, out / "study", progress=False).run()
            run = read_metadata(args.buffer).seed
            cell_path = StudyPaths(out / "study").cell(Cell(run, args.snapshot, "tom", args.seed))
            cell = json.loads(cell_path.read_text())
            w_path = compute_weights(
                profile, args.buffer, args.snapshot, "tom", out / "w.npz", seed=args.seed
            )
            report = json.loads(w_path.with_suffix(".json").read_text())
            weights[name] = np.load(w_path)["weights"]
            conv = report.get("q_convergence", {"steps": len(report["q_loss"]), "converged": None})
            print(
                f"{name:<12} Q steps {conv['steps']:>6}  converged {conv['converged']}  "
                f"weight seconds {cell['weight_seconds']:7.1f}  "
                f"on-policy state error {cell['on_policy']['state_mse']:.4f}  "
                f"ESS share {cell['ess_share']:.3f}"
            )
    a, b = weights.values()
    print(f"Spearman between the two weight vectors: {spearmanr(a, b).statistic:.3f}")


if __name__ == "__main__":
    main()
