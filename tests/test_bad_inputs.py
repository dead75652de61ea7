"""Bad inputs that once escaped as tracebacks (docs/bad-inputs.md lists what the suite covers):
each is one stderr line, exit code 2, and every file that existed before is unchanged."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from tests.conftest import REPO_ROOT

SMOKE_SAC = yaml.safe_load((REPO_ROOT / "pipelines" / "smoke.yaml").read_text())["sac"]


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _assert_one_line(code: int, err: str, *expected: str) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("tomrepro: error: "), err
    assert "Traceback" not in err and all(e in err for e in expected), err


# --- buffer files --------------------------------------------------------------------------------


def test_a_snapshot_entry_that_cannot_be_opened_is_refused(buffer_file, run_cli):
    """Found by the 500-case fuzz run: one byte overwritten in a snapshot's object header made
    h5py return None for the group (an AttributeError traceback). A dangling link is the same
    unresolvable entry, made on purpose."""
    with h5py.File(buffer_file, "r+") as f:
        f["policy_snapshots"]["000003"] = h5py.SoftLink("/nowhere")
    before = _digests(buffer_file.parent)
    for command in ("inspect", "validate"):
        code, _, err = run_cli(command, buffer_file)
        _assert_one_line(code, err, "snapshot entry '000003' is not a readable group")
    assert _digests(buffer_file.parent) == before


# --- a continuation's agent checkpoint ----------------------------------------------------------


def _header(**entries) -> dict:
    """An agent checkpoint's fields as `tomrepro collect` writes them, with `entries` replacing
    some (a value of None removes the entry)."""
    payload = {
        "env_step": 200,
        "config": json.dumps({"sac": SMOKE_SAC}),
        "sac": {"actor": {}},
        "loop": {"episode": 0, "episode_step": 0, "episode_return": 0.0},
        "env": {},
        "observation": torch.zeros(11, dtype=torch.float64),
    }
    payload.update(entries)
    return {k: v for k, v in payload.items() if v is not None}


AGENT_CHECKPOINTS = {
    "plain pickle": (pickle.dumps({"env_step": 200}), "unsafe or foreign pickle"),
    "a tensor": (torch.zeros(3), "holds a Tensor"),
    "no env step": (_header(env_step=None), "not a tomrepro agent checkpoint (KeyError"),
    "config not JSON": (_header(config="{sac"), "not a tomrepro agent checkpoint (JSONDecode"),
    "config without sac": (_header(config="{}"), "not a tomrepro agent checkpoint (KeyError"),
    "sac config invalid": (
        _header(config=json.dumps({"sac": {**SMOKE_SAC, "gamma": 2.0}})),
        "not a tomrepro agent checkpoint",
    ),
    "loop not a mapping": (_header(loop=[1, 2]), "not a mapping"),
    "state of another agent": (_header(), "does not fit task Hopper-v5's agent and env"),
}


@pytest.mark.parametrize("case", list(AGENT_CHECKPOINTS))
def test_a_malformed_agent_checkpoint_is_refused_by_continue(case, buffer_file, run_cli):
    content, message = AGENT_CHECKPOINTS[case]
    source = buffer_file.parent
    checkpoint = source / "checkpoints" / "agent_v000001.pt"
    checkpoint.parent.mkdir()
    if isinstance(content, bytes):
        checkpoint.write_bytes(content)
    else:
        torch.save(content, checkpoint)
    before = _digests(source)
    out = source.parent / f"{source.name}_continued"
    code, _, err = run_cli(
        "continue", buffer_file, "--snapshot", "1", "--profile", "smoke", "--out", out, "--quiet"
    )
    _assert_one_line(code, err, str(checkpoint), message)
    assert _digests(source) == before
    # Only a state that fails while loading leaves the run's fingerprint (no output) behind.
    assert not out.exists() or [p.name for p in out.iterdir()] == ["config.json"]


# --- D4RL-style files -------------------------------------------------------------------------


def _d4rl(path: Path, **replace) -> Path:
    n = 6
    keys = {
        "observations": np.zeros((n, 11), np.float32),
        "actions": np.zeros((n, 3), np.float32),
        "rewards": np.ones(n, np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.r_[np.zeros(n - 1, bool), True],
        **replace,
    }
    with h5py.File(path, "w") as f:
        for key, value in keys.items():
            if value is None:
                f.create_group(key)
            else:
                f.create_dataset(key, data=value)
    return path


D4RL_FILES = {
    "text rewards": ({"rewards": np.array([b"r"] * 6)}, "rewards must be an array of numbers"),
    "scalar rewards": ({"rewards": np.float32(1.0)}, "rewards must be an array of numbers"),
    "observations a group": ({"observations": None}, "observations is not a dataset"),
    "two rewards per row": (
        {"rewards": np.ones((6, 2), np.float32)},
        "rewards must hold one value per row",
    ),
    "object next observations": (
        {"next_observations": np.array(["s"] * 6, dtype=h5py.string_dtype())},
        "next_observations must be an array of numbers",
    ),
}


@pytest.mark.parametrize("case", list(D4RL_FILES))
def test_a_malformed_d4rl_file_is_refused(case, tmp_path, run_cli):
    replace, message = D4RL_FILES[case]
    source = _d4rl(tmp_path / "in.hdf5", **replace)
    before = _digests(tmp_path)
    out = tmp_path / "out.h5"
    code, _, err = run_cli("import-d4rl", source, "--task", "Hopper-v5", "--out", out)
    _assert_one_line(code, err, message)
    assert _digests(tmp_path) == before  # no output, no temporary file, the source intact


def test_a_well_formed_d4rl_file_of_the_same_shape_imports(tmp_path, run_cli):
    """Sanity check of the cases above: without their one defect the file is accepted."""
    code, _, err = run_cli(
        "import-d4rl", _d4rl(tmp_path / "in.hdf5"), "--task", "Hopper-v5", "--out", tmp_path / "o"
    )
    assert code == 0, err


# --- sweep resources ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--num-cpus", "0"),
        ("--num-cpus", "-1"),
        ("--cpus-per-run", "0"),
        ("--cpus-per-run", "-1"),
        ("--cpus-per-run", "nan"),
        ("--cpus-per-run", "inf"),
        ("--gpus-per-run", "-1"),
        ("--gpus-per-run", "nan"),
        ("--runs-per-population", "0"),
        ("--runs-per-population", "-2"),
    ],
)
def test_impossible_sweep_resources_are_refused_before_ray_starts(option, value, tmp_path, run_cli):
    out = tmp_path / "sweep"
    code, _, err = run_cli(
        "sweep", "--profile", "smoke", "--kind", "scratch", "--out", out, option, value, "--quiet"
    )
    _assert_one_line(code, err, option)
    assert not out.exists()


# --- profiles and outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "- seed: 0\n- sac: {}\n", "just a string\n"])
def test_a_profile_that_is_not_a_mapping_is_refused(text, tmp_path, run_cli):
    profile = tmp_path / "p.yaml"
    profile.write_text(text)
    code, _, err = run_cli("random-buffer", "--profile", profile, "--out", tmp_path / "o.h5")
    _assert_one_line(code, err, str(profile), "must be a mapping")
    assert [p.name for p in tmp_path.iterdir()] == ["p.yaml"]


@pytest.mark.parametrize("command", ["random-buffer", "export-d4rl"])
def test_an_output_path_that_is_a_directory_is_refused(command, buffer_file, tmp_path, run_cli):
    out = tmp_path / "taken"
    (out / "inside").mkdir(parents=True)
    (out / "inside" / "keep.txt").write_text("someone's work")
    before = _digests(tmp_path)
    args = ["--profile", "smoke"] if command == "random-buffer" else [buffer_file]
    code, _, err = run_cli(command, *args, "--out", out)
    _assert_one_line(code, err, f"cannot write {out}")
    assert _digests(tmp_path) == before
