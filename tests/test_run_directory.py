"""One run lifecycle: fingerprints decide done / resume / fresh, and a lock keeps two writers
out of one directory (real processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT
from tomrepro.core.errors import TomreproError
from tomrepro.loops.run_directory import LOCK, RunDirectory, Start


def _directory(root, config, finished=lambda: False):
    return RunDirectory(root, config, "test run", ("out.txt",), ("out.txt",), finished)


def test_fingerprint_decides_done_resume_fresh_and_refuses_another_config(tmp_path):
    done = {"value": False}
    d = _directory(tmp_path / "r", {"a": 1}, lambda: done["value"])
    assert d.prepare() is Start.FRESH
    (tmp_path / "r" / "out.txt").write_text("work")
    assert d.prepare() is Start.RESUME
    done["value"] = True
    assert d.prepare() is Start.DONE and d.is_done()
    assert d.prepare(rerun_complete=True) is Start.FRESH
    assert not (tmp_path / "r" / "out.txt").exists()
    (tmp_path / "r" / "out.txt").write_text("work")
    other = _directory(tmp_path / "r", {"a": 2})
    with pytest.raises(TomreproError, match="different config; choose another --out"):
        other.prepare()
    assert (tmp_path / "r" / "out.txt").read_text() == "work"  # nothing destroyed
    assert other.prepare(overwrite=True) is Start.FRESH
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "out.txt").write_text("theirs")
    with pytest.raises(TomreproError, match=r"without a config\.json"):
        _directory(foreign, {"a": 1}).prepare()


def _collect(out, *extra):
    cmd = [sys.executable, "-m", "tomrepro", "collect", "--profile", "smoke", "--out", str(out),
           "--env-steps", "1500", "--quiet", *extra]  # fmt: skip
    return cmd


@pytest.mark.serial  # races a process's start-up against another's run: needs a quiet machine
def test_a_second_writer_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
    root = tmp_path / "run"
    out = root / "seed_0"  # collect locks each run's directory; smoke's first run is seed 0
    first = subprocess.Popen(_collect(root), cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / LOCK).exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    second = subprocess.run(_collect(root), cwd=REPO_ROOT, capture_output=True, text=True)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"in use by pid {first.pid} on host {socket.gethostname()}" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (out / LOCK).exists()  # a killed holder cannot clean up
    third = subprocess.run(_collect(root), cwd=REPO_ROOT, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr
    assert not (out / LOCK).exists()


def test_a_holder_on_another_host_needs_break_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "since": 0}))
    d = _directory(out, {"a": 1})
    with pytest.raises(TomreproError, match=r"in use by pid .* on host elsewhere"):
        with d.lock():
            pass
    with d.lock(break_lock=True):
        assert json.loads((out / LOCK).read_text())["host"] == socket.gethostname()
    assert not (out / LOCK).exists()


def test_code_digest_ignores_comments_and_docstrings_but_not_code(tmp_path):
    from tomrepro.core.code_closure import code_digest

    pkg = tmp_path / "tomrepro"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text('"""A."""\nimport tomrepro.b\n\n\ndef f():\n    return 1\n')
    (pkg / "b.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 1\n")  # not imported by a: never counts
    first = code_digest(["tomrepro.a"], tmp_path)
    (pkg / "a.py").write_text(
        '"""Another docstring."""\nimport tomrepro.b  # a comment\n\n\ndef f():\n'
        '    """Why."""\n    return 1\n'
    )
    (pkg / "c.py").write_text("Y = 2\n")
    assert code_digest(["tomrepro.a"], tmp_path / ".") == first
    (pkg / "b.py").write_text("X = 2\n")  # an imported module's code changed
    assert code_digest(["tomrepro.a"], tmp_path / "./") != first


def test_a_write_past_a_file_size_limit_is_one_line_and_keeps_the_old_file(tmp_path):
    """Out of space, simulated by RLIMIT_FSIZE: no partial file under the final name, the
    earlier artifact intact, one line."""
    out = tmp_path / "random.h5"
    out.write_bytes(b"an earlier artifact")
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))\n"
        "from tomrepro.cli import main\n"
        f"sys.exit(main(['random-buffer', '--profile', 'smoke', '--out', {str(out)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot write" in done.stderr and "too large" in done.stderr.lower()
    assert out.read_bytes() == b"an earlier artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["random.h5"]  # no temporary file left
