"""The click CLI as a user meets it: help, the console script, stage commands, errors."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tomrepro.core.buffer_file import read_buffer


def test_help_lists_the_commands(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("inspect", "validate", "tasks", "random-buffer"):
        assert command in out


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tomrepro", "inspect", str(tmp_path / "missing.h5")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tomrepro: error: {tmp_path / 'missing.h5'}: no such file"
    ]


def test_usage_errors_are_one_line_and_exit_2(run_cli):
    for args in (("inspect",), ("frobnicate",), ("inspect", "--nope", "x.h5")):
        code, _, err = run_cli(*args)
        assert code == 2 and err.count("\n") == 1, (args, err)


def test_inspect_json_summarises_the_file(buffer_file, run_cli, hopper_buffer):
    code, out, _ = run_cli("inspect", "--json", buffer_file)
    assert code == 0
    summary = json.loads(out)
    cols = hopper_buffer.columns()
    assert summary["task_id"] == "Hopper-v5"
    assert summary["transitions"] == 600
    assert summary["episodes"] == len(set(cols["episode_ids"].tolist()))
    assert summary["terminations"] == int(cols["terminations"].sum())
    assert summary["policy_snapshots"] == {"1": 200, "2": 400}
    assert set(summary["policy_versions"]) == {"0", "1", "2"}
    # Returns of finished episodes, recomputed here the slow, obvious way.
    finished = [
        cols["rewards"][cols["episode_ids"] == e].astype(float).sum()
        for e in set(cols["episode_ids"].tolist())
        if (cols["terminations"] | cols["truncations"])[cols["episode_ids"] == e].any()
    ]
    assert summary["episode_returns"]["count"] == len(finished)
    assert abs(summary["episode_returns"]["mean"] - sum(finished) / len(finished)) < 1e-6


def test_inspect_text_mentions_task_and_size(buffer_file, run_cli):
    code, out, _ = run_cli("inspect", buffer_file)
    assert code == 0 and "Hopper-v5" in out and "600" in out


def test_random_buffer_command_is_deterministic(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for out in (a, b):
        code, _, err = run_cli("random-buffer", "--profile", "smoke", "--out", out)
        assert code == 0, err
    ca, cb = read_buffer(a).buffer.columns(), read_buffer(b).buffer.columns()
    assert all((ca[k] == cb[k]).all() for k in ca)
    assert read_buffer(a).metadata.config["profile"] == "smoke"
