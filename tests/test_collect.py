"""`tomrepro collect` on the smoke profile: one independent run per seed, valid output, snapshots
that reproduce the recorded actions, determinism, resume after a real SIGKILL that keeps the
finished runs, skipping finished work, and bad options."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT, copied_collect
from tomrepro.core.buffer_file import content_digest, read_buffer, read_snapshot
from tomrepro.core.config import load_profile, with_overrides
from tomrepro.core.errors import ConfigError
from tomrepro.core.noise import StepNoise
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.sac import SquashedGaussianActor
from tomrepro.learning.serialization import load_tensors, save_tensors
from tomrepro.loops.collect import (
    Collector,
    CollectPaths,
    run_dir,
    snapshot_steps,
)

SMOKE = load_profile("smoke", REPO_ROOT / "pipelines")
PROFILE_NAMES = ("smoke", "default", "paper")


@pytest.fixture(scope="module")
def collect_dir(smoke_collect, tmp_path_factory) -> Path:
    """Every run of the smoke profile (two seeds), uninterrupted."""
    return copied_collect(smoke_collect, tmp_path_factory)


@pytest.fixture(scope="module")
def collected(collect_dir) -> Path:
    """The first run's directory."""
    return run_dir(collect_dir, SMOKE.collect.seeds[0])


def test_each_seed_is_an_independent_run_with_its_own_data(collect_dir):
    seeds = SMOKE.collect.seeds
    assert len(seeds) >= 2
    assert sorted(p.name for p in collect_dir.iterdir()) == sorted(f"seed_{s}" for s in seeds)
    runs = [read_buffer(run_dir(collect_dir, s) / "buffer.h5") for s in seeds]
    assert [r.metadata.seed for r in runs] == list(seeds)
    assert [r.metadata.config["seed"] for r in runs] == list(seeds)
    assert all("seeds" not in r.metadata.config["collect"] for r in runs)
    first, second = (r.buffer.columns() for r in runs[:2])
    assert not np.allclose(first["observations"][0], second["observations"][0])  # own env reset
    random_rows = first["policy_versions"] == 0
    assert not np.allclose(first["actions"][random_rows], second["actions"][random_rows])
    assert runs[0].snapshot_steps == runs[1].snapshot_steps  # one plan, independent data
    snap = [read_snapshot(run_dir(collect_dir, s) / "buffer.h5", 1).tensors for s in seeds[:2]]
    assert not all(np.array_equal(snap[0][k], snap[1][k]) for k in snap[0])


def test_repeated_collect_seeds_are_refused():
    with pytest.raises(ConfigError, match=r"collect.*seeds has repeated entries: \[1, 2, 1\]"):
        with_overrides(SMOKE, "collect", seeds=(1, 2, 1))


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profiles_study_and_continue_from_snapshots_their_collect_runs_have(name):
    """A snapshot named by the offline study or a continuation must exist in the collect plan."""
    profile = load_profile(name, REPO_ROOT / "pipelines")
    c = profile.collect
    last = len(snapshot_steps(c.random_steps, c.snapshot_every, c.env_steps))
    wanted = [*profile.offline_study.snapshots, *profile.mbpo.continue_snapshots]
    assert max(wanted) <= last, f"{name}: snapshots {wanted}, collect makes {last}"


def test_output_is_a_complete_valid_buffer_with_snapshots(collected, run_cli):
    code, _out, err = run_cli("validate", collected / "buffer.h5")
    assert code == 0, err
    loaded = read_buffer(collected / "buffer.h5")
    cfg = SMOKE.collect
    steps = snapshot_steps(cfg.random_steps, cfg.snapshot_every, cfg.env_steps)
    assert loaded.snapshot_steps == {v + 1: k for v, k in enumerate(steps)}
    versions = loaded.buffer.columns()["policy_versions"]
    env_steps = loaded.buffer.columns()["env_steps"]
    expected = np.searchsorted(np.array(steps), env_steps, side="right")
    np.testing.assert_array_equal(versions, expected)
    for version in range(1, len(steps) + 1):
        assert (collected / "checkpoints" / f"agent_v{version:06d}.pt").exists()


def test_snapshots_reproduce_the_recorded_actions(collected):
    loaded = read_buffer(collected / "buffer.h5")
    cols = loaded.buffer.columns()
    task_act = cols["actions"].shape[1]
    run_seed = loaded.metadata.seed  # the run's own seed drives its noise
    normal = StepNoise(derive_seed(run_seed, "exploration"), task_act, "normal")
    uniform = StepNoise(derive_seed(run_seed, "exploration"), task_act, "uniform")
    random_rows = cols["policy_versions"] == 0
    low, high = -3.0, 3.0  # InvertedPendulum-v5 action bounds
    np.testing.assert_allclose(
        cols["actions"][random_rows],
        low + (high - low) * uniform.steps(cols["env_steps"][random_rows]),
        rtol=0,
        atol=1e-6,
    )
    for version in loaded.snapshot_steps:
        rows = cols["policy_versions"] == version
        snap = read_snapshot(collected / "buffer.h5", version)
        noise = normal.steps(cols["env_steps"][rows])
        numpy_actions = SnapshotPolicy(snap.tensors).act_batch(cols["observations"][rows], noise)
        np.testing.assert_allclose(cols["actions"][rows], numpy_actions, rtol=0, atol=1e-5)
        # And independently through the torch actor loaded from the snapshot's tensors.
        actor = SquashedGaussianActor(
            4, 1, tuple(SMOKE.sac.hidden_sizes), np.array([low]), np.array([high])
        )
        actor.load_state_dict({k: torch.from_numpy(v) for k, v in snap.tensors.items()})
        with torch.no_grad():
            torch_actions = actor.act(
                torch.from_numpy(cols["observations"][rows]), torch.from_numpy(noise)
            ).numpy()
        np.testing.assert_allclose(cols["actions"][rows], torch_actions, rtol=0, atol=1e-5)
        # A different snapshot does not reproduce them: the check has teeth.
        other = read_snapshot(collected / "buffer.h5", 1 if version != 1 else 2)
        assert not np.allclose(
            SnapshotPolicy(other.tensors).act_batch(cols["observations"][rows], noise),
            cols["actions"][rows],
            atol=1e-3,
        )


def test_finished_runs_are_not_redone(collect_dir, run_cli):
    buffers = [run_dir(collect_dir, s) / "buffer.h5" for s in SMOKE.collect.seeds]
    before = [b.stat().st_mtime_ns for b in buffers]
    code, out, err = run_cli(
        "collect",
        "--profile",
        REPO_ROOT / "pipelines" / "smoke.yaml",
        "--out",
        collect_dir,
        "--quiet",
    )
    assert code == 0, err
    assert err.count("complete; nothing to do") == len(buffers)
    assert out.splitlines() == [f"wrote {b}" for b in buffers]
    assert [b.stat().st_mtime_ns for b in buffers] == before


def test_killed_collection_keeps_finished_runs_and_resumes_to_identical_files(
    collect_dir, tmp_path
):
    """SIGKILLed inside the second run (the first one finished, copied from `collect_dir` to
    save its time): the first run is kept as it is, the second resumes from its checkpoint, and
    both files equal those of the uninterrupted `collect_dir`."""
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "tomrepro", "collect", "--profile",
        str(REPO_ROOT / "pipelines" / "smoke.yaml"), "--out", str(out), "--quiet",
    ]  # fmt: skip
    first, second = (run_dir(out, s) for s in SMOKE.collect.seeds[:2])
    shutil.copytree(collect_dir / first.name, first)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = second / "checkpoints" / "agent_v000002.pt"
    deadline = time.monotonic() + 180
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the collection finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_buffer(first / "buffer.h5").metadata.complete
    assert not read_buffer(second / "buffer.h5", allow_incomplete=True).metadata.complete
    kept = (first / "buffer.h5").stat().st_mtime_ns
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "complete; nothing to do" in resumed.stderr
    assert "resuming at env step" in resumed.stderr
    assert (first / "buffer.h5").stat().st_mtime_ns == kept
    for run in (first, second):
        reference = collect_dir / run.name / "buffer.h5"
        assert content_digest(run / "buffer.h5") == content_digest(reference), run.name


def test_output_made_with_another_config_is_not_touched(collected, collect_dir, run_cli):
    before = (collected / "buffer.h5").read_bytes()
    code, _, err = run_cli(
        "collect",
        "--profile",
        REPO_ROOT / "pipelines" / "smoke.yaml",
        "--out",
        collect_dir,
        "--env-steps",
        "2500",
        "--quiet",
    )
    assert code == 2 and "different config" in err and err.count("\n") == 1
    assert (collected / "buffer.h5").read_bytes() == before


def test_a_single_run_directory_is_refused_then_replaced_with_overwrite(tmp_path, run_cli):
    out = tmp_path / "old"
    (out / "checkpoints").mkdir(parents=True)
    (out / "buffer.h5").write_text("a run made before runs had seeds")
    base = [
        "collect", "--profile", REPO_ROOT / "pipelines" / "smoke.yaml", "--out", out,
        "--env-steps", "1500", "--seed", "3", "--quiet",
    ]  # fmt: skip
    code, _, err = run_cli(*base)
    assert code == 2 and "holds a single collect run" in err and err.count("\n") == 1
    assert (out / "buffer.h5").exists()
    code, _, err = run_cli(*base, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["seed_3"]
    loaded = read_buffer(out / "seed_3" / "buffer.h5")
    assert loaded.metadata.complete and loaded.metadata.seed == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "Hopper-v9"], "unknown task 'Hopper-v9'"),
        (["--env-steps", "0"], "collect.env_steps"),
        (["--env-steps", "-10"], "collect.env_steps"),
        (["--snapshot-every", "5000"], "snapshot_every (5000) is larger than env_steps (3000)"),
        (["--device", "tpu"], "Invalid value for '--device'"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
    ],
)
def test_bad_options_are_one_line_errors(args, message, run_cli, tmp_path):
    code, _, err = run_cli(
        "collect",
        "--profile",
        REPO_ROOT / "pipelines" / "smoke.yaml",
        "--out",
        tmp_path / "o",
        "--quiet",
        *args,
    )
    assert code == 2, err
    assert err.count("\n") == 1 and message in err, err


def test_unwritable_output_is_a_one_line_error(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(
        "collect",
        "--profile",
        REPO_ROOT / "pipelines" / "smoke.yaml",
        "--out",
        blocker / "run",
        "--quiet",
    )
    assert code == 2 and "cannot create output directory" in err and err.count("\n") == 1


def test_fresh_start_discards_stale_checkpoints_and_same_seed_gives_identical_file(
    collected, tmp_path
):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "agent_v000009.pt").write_bytes(b"left over from another run")
    Collector(SMOKE, out, progress=False).run()
    assert not (out / "checkpoints" / "agent_v000009.pt").exists()
    assert (out / "checkpoints" / "agent_v000001.pt").exists()
    assert content_digest(out / "buffer.h5") == content_digest(collected / "buffer.h5")


def test_overwrite_replaces_an_unreadable_buffer_file(tmp_path, run_cli):
    out = tmp_path / "runs"
    (out / "seed_0").mkdir(parents=True)
    (out / "seed_0" / "buffer.h5").write_text("not a buffer")
    base = [
        "collect", "--profile", REPO_ROOT / "pipelines" / "smoke.yaml", "--out", out,
        "--env-steps", "1500", "--seed", "0", "--quiet",
    ]  # fmt: skip
    code, _, err = run_cli(*base)
    assert code == 2 and "not an HDF5 file" in err
    code, _, err = run_cli(*base, "--overwrite")
    assert code == 0, err
    assert read_buffer(out / "seed_0" / "buffer.h5").metadata.complete


class _Stopped(Exception):
    """Stands for a kill right after a checkpoint was written."""


def test_resume_passes_over_checkpoints_that_lack_entries(collected, tmp_path, monkeypatch, caplog):
    """Stopped after snapshot 3; then snapshot 3's checkpoint lacks `config` and snapshot 2's
    `env_step`: the resume starts from snapshot 1 and ends with the uninterrupted run's file."""
    out = tmp_path / "run"
    checkpoint = Collector._checkpoint

    def checkpoint_then_stop(self, run):
        checkpoint(self, run)
        if run.version == 3:
            raise _Stopped

    monkeypatch.setattr(Collector, "_checkpoint", checkpoint_then_stop)
    with pytest.raises(_Stopped):
        Collector(SMOKE, out, progress=False).run()
    monkeypatch.undo()
    paths = CollectPaths(out)
    for version, entry in ((3, "config"), (2, "env_step")):
        payload = load_tensors(paths.checkpoint(version), "agent checkpoint")
        del payload[entry]
        save_tensors(payload, paths.checkpoint(version))
    c = SMOKE.collect
    first = snapshot_steps(c.random_steps, c.snapshot_every, c.env_steps)[0]
    with caplog.at_level(logging.INFO, logger="tomrepro.loops.collect"):
        Collector(SMOKE, out, progress=False).run()
    assert f"resuming at env step {first} (policy version 1)" in caplog.text
    assert "lacks config" in caplog.text and "lacks env_step" in caplog.text
    assert content_digest(paths.buffer) == content_digest(collected / "buffer.h5")
