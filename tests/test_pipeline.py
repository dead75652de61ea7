"""The DVC pipeline end to end on the smoke profile: real DVC, real MuJoCo, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import xarray as xr
import yaml

from tests.conftest import REPO_ROOT
from tomrepro.analysis.statistics import Verdict
from tomrepro.core.buffer_file import read_buffer
from tomrepro.core.config import load_profile

IGNORE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "datasets",
    "reports",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    "tmp",
    "cache",
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", RAY_AUTH_MODE="disabled")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project, as a fresh git repo, with the smoke profile selected."""
    root = tmp_path_factory.mktemp("project") / "tomrepro"
    shutil.copytree(REPO_ROOT, root, ignore=IGNORE)
    (root / "params.yaml").write_text(yaml.safe_dump({"profile": "smoke"}))
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        assert _run(args, root).returncode == 0
    return root


def test_dvc_repro_runs_the_smoke_profile_and_then_has_nothing_to_do(project):
    dvc = [sys.executable, "-m", "dvc"]
    first = _run([*dvc, "repro"], project)
    assert first.returncode == 0, first.stdout + first.stderr
    buffer = project / "datasets" / "smoke" / "random_buffer.h5"
    loaded = read_buffer(buffer, deep=True)
    assert loaded.metadata.task_id == "InvertedPendulum-v5"
    assert len(loaded.buffer) == 2000
    metrics = json.loads((project / "datasets" / "smoke" / "random_buffer.json").read_text())
    assert metrics["transitions"] == 2000
    runs = list(load_profile("smoke", project / "pipelines").collect.seeds)
    for run in runs:
        path = project / "datasets" / "smoke" / "collect" / f"seed_{run}" / "buffer.h5"
        collected = read_buffer(path, deep=True)
        assert collected.metadata.complete and collected.metadata.seed == run
    study = xr.load_dataset(
        project / "datasets" / "smoke" / "offline_study" / "study.nc", engine="h5netcdf"
    )
    assert study.run.values.tolist() == runs
    for stage in ("mbpo_continue", "mbpo_scratch"):
        summary = json.loads((project / "datasets" / "smoke" / f"{stage}.json").read_text())
        assert len(summary) == 4 and {r["status"] for r in summary.values()} == {"done"}, summary
        assert all(isinstance(r["final_return_mean"], float) for r in summary.values())
    claims = json.loads((project / "datasets" / "smoke" / "analysis" / "claims.json").read_text())
    ids = [c["claim_id"] for c in claims["claims"].values()]
    assert sorted(set(ids)) == ["C1", "C2", "C3", "C4", "C5", "C6"], ids
    verdicts = {c["verdict"] for c in claims["claims"].values()}
    assert verdicts <= set(get_args(Verdict)) - {"sanity check failed"}
    offline = [c for c in claims["claims"].values() if c["claim_id"] in ("C1", "C2")]
    assert offline and all(c["units"] == len(runs) for c in offline)  # collect runs are units
    html = (project / "reports" / "index.html").read_text()
    assert 'id="claims-table"' in html and html.count("data:image/png;base64,") >= 6
    assert (project / "reports" / "report.md").read_text().startswith("# TOM reproduction report")
    times = sorted(p.stem for p in (project / "datasets" / "smoke" / "stage_times").glob("*.json"))
    assert times == sorted(
        [
            "random_buffer",
            "collect",
            "offline_study",
            "mbpo_continue",
            "mbpo_scratch",
            "finite_mdp",
            "analyse",
        ]
    )

    second = _run([*dvc, "repro"], project)
    assert second.returncode == 0, second.stderr
    assert "Running stage" not in second.stdout, second.stdout

    shown = _run([*dvc, "metrics", "show", "--json"], project)
    assert shown.returncode == 0 and "wall_seconds" in shown.stdout
    assert "C5 (finite MDPs" in shown.stdout  # a C5 row, whatever its scope's detail
    plots = _run([*dvc, "plots", "show", "--json"], project)
    assert plots.returncode == 0, plots.stderr
    assert "claims.csv" in plots.stdout and "mbpo_scratch_curves.csv" in plots.stdout
