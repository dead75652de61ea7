"""`tomrepro collect` on the smoke profile: valid output, snapshots that reproduce the recorded
actions, determinism, resume after a real SIGKILL, skipping finished work, and bad options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT
from tomrepro.core.buffer_file import content_digest, read_buffer, read_snapshot
from tomrepro.core.config import load_profile
from tomrepro.core.noise import StepNoise
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.sac import SquashedGaussianActor
from tomrepro.loops.collect import Collector, snapshot_steps

SMOKE = load_profile("smoke", REPO_ROOT / "pipelines")


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("collect") / "run"
    Collector(SMOKE, out, progress=False).run()
    return out


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
    normal = StepNoise(derive_seed(SMOKE.seed, "exploration"), task_act, "normal")
    uniform = StepNoise(derive_seed(SMOKE.seed, "exploration"), task_act, "uniform")
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


def test_finished_output_is_not_redone(collected, run_cli):
    before = (collected / "buffer.h5").stat().st_mtime_ns
    code, _, err = run_cli(
        "collect",
        "--profile",
        REPO_ROOT / "pipelines" / "smoke.yaml",
        "--out",
        collected,
        "--quiet",
    )
    assert code == 0, err
    assert "complete; nothing to do" in err
    assert (collected / "buffer.h5").stat().st_mtime_ns == before


def test_killed_run_resumes_to_the_identical_file(collected, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "tomrepro",
        "collect",
        "--profile",
        str(REPO_ROOT / "pipelines" / "smoke.yaml"),
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "checkpoints" / "agent_v000002.pt"
    deadline = time.monotonic() + 120
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    meta = json.loads(
        json.dumps(read_buffer(out / "buffer.h5", allow_incomplete=True).metadata.complete)
    )
    assert meta is False
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at env step" in resumed.stderr
    assert content_digest(out / "buffer.h5") == content_digest(collected / "buffer.h5")


def test_output_made_with_another_config_is_not_touched(collected, run_cli, tmp_path):
    before = (collected / "buffer.h5").read_bytes()
    code, _, err = run_cli(
        "collect",
        "--profile",
        REPO_ROOT / "pipelines" / "smoke.yaml",
        "--out",
        collected,
        "--seed",
        "5",
        "--quiet",
    )
    assert code == 2 and "different config" in err and err.count("\n") == 1
    assert (collected / "buffer.h5").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "Hopper-v9"], "unknown task 'Hopper-v9'"),
        (["--env-steps", "0"], "collect.env_steps"),
        (["--env-steps", "-10"], "collect.env_steps"),
        (["--snapshot-every", "5000"], "snapshot_every (5000) is larger than env_steps (3000)"),
        (["--device", "tpu"], "Invalid value for '--device'"),
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
    out = tmp_path / "run"
    out.mkdir()
    (out / "buffer.h5").write_text("not a buffer")
    base = [
        "collect", "--profile", REPO_ROOT / "pipelines" / "smoke.yaml", "--out", out,
        "--env-steps", "1500", "--quiet",
    ]  # fmt: skip
    code, _, err = run_cli(*base)
    assert code == 2 and "not an HDF5 file" in err
    code, _, err = run_cli(*base, "--overwrite")
    assert code == 0, err
    assert read_buffer(out / "buffer.h5").metadata.complete
