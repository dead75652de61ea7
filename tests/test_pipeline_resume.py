"""A `dvc repro` SIGKILLed in the middle of the MBPO sweep keeps the runs that had finished: real
DVC, real Ray, real MuJoCo on the smoke profile, in throwaway copies of the project."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import REPO_ROOT
from tomrepro.core.buffer_file import read_buffer
from tomrepro.loops.mbpo import TIMING_COLUMNS

pytestmark = pytest.mark.slow

IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "datasets", "reports", "__pycache__", ".pytest_cache", ".hypothesis",
    ".ruff_cache", ".mypy_cache", "*.egg-info", "tmp", "cache",
)  # fmt: skip
STAGE = "mbpo_scratch"  # needs no upstream stage: the sweep alone is run
SWEEP = Path("datasets/smoke/mbpo_scratch")
TIMING_KEYS = ("seconds", "seconds_total", "env_steps_per_minute", "time_share")


def _env(root: Path) -> dict[str, str]:
    """The copy's own package first: the editable install would import the live working tree,
    which may change while the test runs (and Ray's workers would import the copy's)."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", RAY_AUTH_MODE="disabled", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(root)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _copy_project(root: Path) -> Path:
    """The project as a fresh git repo with the smoke profile selected."""
    shutil.copytree(REPO_ROOT, root, ignore=IGNORE)
    (root / "params.yaml").write_text(yaml.safe_dump({"profile": "smoke"}))
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        subprocess.run(args, cwd=root, env=_env(root), check=True, capture_output=True)
    return root


def _repro(root: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dvc", "repro", STAGE]
    return subprocess.run(
        cmd, cwd=root, env=_env(root), capture_output=True, text=True, check=False
    )


def _runs(root: Path) -> list[Path]:
    return sorted((root / SWEEP).glob("*/*/s*"))


def _finished(run: Path) -> bool:
    return (run / "run.json").is_file()


def _checkpoint_step(run: Path) -> int:
    try:
        return int(torch.load(run / "checkpoint.pt", weights_only=True)["env_step"])
    except Exception:  # absent, or being written
        return -1


def _lock_holder(run: Path) -> int | None:
    """The pid in a run's lock file, if the file is there and readable."""
    try:
        return int(json.loads((run / ".tomrepro.lock").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _in_flight(root: Path) -> list[Path]:
    """Unfinished runs that a process holds, past their first epoch and not past half-way (so
    the second or two that Ray's orphaned workers live on cannot finish them)."""
    steps = yaml.safe_load((root / "pipelines" / "smoke.yaml").read_text())["mbpo"]["env_steps"]
    return [
        r
        for r in _runs(root)
        if not _finished(r)
        and _lock_holder(r) is not None
        and 0 < _checkpoint_step(r) <= steps // 2
    ]


def _file_ids(run: Path) -> dict[str, tuple[int, int, int]]:
    """Inode, size and mtime of every file of a run: unchanged means not rewritten."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(run.iterdir())
        if p.is_file()
    }


def _kill_mid_sweep(root: Path) -> None:
    """Start the stage, SIGKILL its process group once a run has finished while another is
    mid-run, then wait until no process of it holds a run directory (Ray's workers are in
    sessions of their own and exit when they lose their raylet)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", STAGE],
        cwd=root,
        env=_env(root),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while not (any(_finished(r) for r in _runs(root)) and _in_flight(root)):
            assert proc.poll() is None, "the stage ended before it could be killed"
            assert time.monotonic() < deadline, "no moment with a finished and a running run"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for r in _runs(root) if (pid := _lock_holder(r)) is not None):
        assert time.monotonic() < deadline, "processes of the killed pipeline still hold runs"
        time.sleep(0.1)


def _curve(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=list(TIMING_COLUMNS))


def _summary(run: Path) -> dict:
    status = json.loads((run / "run.json").read_text())
    for key in TIMING_KEYS:
        del status["summary"][key]
    return status


def _model_state(run: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["extra"] and payload["config"]
    return payload["state"]


def _assert_same_run(run: Path, reference: Path) -> None:
    assert (run / "config.json").read_text() == (reference / "config.json").read_text()
    assert _summary(run) == _summary(reference)
    pd.testing.assert_frame_equal(_curve(run / "curve.csv"), _curve(reference / "curve.csv"))
    got, want = read_buffer(run / "buffer.h5"), read_buffer(reference / "buffer.h5")
    assert got.metadata.complete and want.metadata.complete
    assert got.snapshot_steps == want.snapshot_steps
    a, b = got.buffer.columns(), want.buffer.columns()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    a_state, b_state = _model_state(run), _model_state(reference)
    assert a_state.keys() == b_state.keys()
    for key in a_state:
        torch.testing.assert_close(a_state[key], b_state[key], rtol=0, atol=0, msg=key)


def test_killed_sweep_keeps_finished_runs_and_ends_as_an_uninterrupted_one(tmp_path):
    killed = _copy_project(tmp_path / "killed")
    reference = shutil.copytree(killed, tmp_path / "reference", symlinks=True)  # the same code
    _kill_mid_sweep(killed)
    done = [r for r in _runs(killed) if _finished(r)]
    todo = [r for r in _runs(killed) if not _finished(r)]
    assert done and todo, (done, todo)
    before = {r: _file_ids(r) for r in done}

    restarted = _repro(killed)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert {r: _file_ids(r) for r in done} == before  # finished runs untouched
    statuses = json.loads((killed / f"{SWEEP}.json").read_text())
    assert {name: row["status"] for name, row in statuses.items()} == {
        str(r.relative_to(killed / SWEEP)): "skipped" if r in done else "done"
        for r in _runs(killed)
    }

    uninterrupted = _repro(reference)
    assert uninterrupted.returncode == 0, uninterrupted.stdout + uninterrupted.stderr
    names = [r.relative_to(reference / SWEEP) for r in _runs(reference)]
    assert names == [r.relative_to(killed / SWEEP) for r in _runs(killed)]
    for name in names:
        _assert_same_run(killed / SWEEP / name, reference / SWEEP / name)
    pd.testing.assert_frame_equal(
        _curve(killed / f"{SWEEP}_curves.csv"), _curve(reference / f"{SWEEP}_curves.csv")
    )
    again = _repro(killed)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout
