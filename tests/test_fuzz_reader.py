"""A fuzzed reader: a small valid buffer file, corrupted (bytes overwritten, truncated, attributes
deleted or retyped, datasets resized); `tomrepro validate` must then either read back exactly the
original data or refuse in one line with exit 2 — never another exception, a hang or a crash.
Each case runs in its own process with a time limit (h5py holds a lock and a deadline cannot
interrupt C code)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO_ROOT

CASE = [sys.executable, str(REPO_ROOT / "tests" / "fuzz_reader_case.py")]
KINDS = ("overwrite", "truncate", "delete_attr", "retype_attr", "resize")


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CASE, str(path)], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )


@pytest.fixture(scope="module")
def original(tmp_path_factory, hopper_buffer, snapshots):
    from tomrepro.core.buffer import ReplayBuffer
    from tomrepro.core.buffer_file import BufferMetadata, write_buffer

    cols = {k: v.copy() for k, v in hopper_buffer.columns().items()}
    cols["policy_versions"] = (cols["env_steps"] // 200).astype(np.int64)
    path = tmp_path_factory.mktemp("fuzz") / "buffer.h5"
    write_buffer(path, ReplayBuffer.from_columns(cols), BufferMetadata("Hopper-v5", 3), snapshots)
    done = _run(path)
    assert done.returncode == 0, done.stderr
    with h5py.File(path, "r") as f:
        attrs = [("/", k) for k in f.attrs]
        f.visititems(lambda name, obj: attrs.extend((name, k) for k in obj.attrs))
        datasets = []
        f.visititems(lambda n, o: datasets.append(n) if isinstance(o, h5py.Dataset) else None)
    return path, done.stdout.strip().splitlines()[-1], attrs, datasets


def _corrupt(path: Path, kind: str, where: float, data: bytes, attrs, datasets) -> None:
    size = path.stat().st_size
    if kind == "overwrite":
        with open(path, "r+b") as fh:
            fh.seek(int(where * (size - 1)))
            fh.write(data)
    elif kind == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(int(where * size))
    else:
        with h5py.File(path, "r+") as f:
            if kind in ("delete_attr", "retype_attr"):
                name, key = attrs[int(where * (len(attrs) - 1))]
                obj = f[name]
                if kind == "delete_attr":
                    del obj.attrs[key]
                else:
                    obj.attrs[key] = [data.hex(), "x"] if len(data) % 2 else 1.5
            else:
                name = datasets[int(where * (len(datasets) - 1))]
                arr = f[name][()]
                attrs_of = dict(f[name].attrs)
                del f[name]
                arr = arr[: len(arr) // 2] if len(data) % 2 else np.concatenate([arr, arr[:1]])
                f.create_dataset(name, data=arr).attrs.update(attrs_of)


def _check(original, tmp_path, kind, where, data):
    path, digest, attrs, datasets = original
    copy = tmp_path / f"case_{kind}.h5"
    shutil.copy(path, copy)
    _corrupt(copy, kind, where, data, attrs, datasets)
    done = _run(copy)
    if done.returncode == 0:
        got = done.stdout.strip().splitlines()[-1]
        assert got == digest, (kind, where, "read back different data")
    else:
        assert done.returncode == 2, (kind, where, done.returncode, done.stderr[-2000:])
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


CASES = dict(
    kind=st.sampled_from(KINDS),
    where=st.floats(0, 1, allow_nan=False),
    data=st.binary(min_size=1, max_size=64),
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(**CASES)
def test_corrupted_files_are_read_exactly_or_refused_in_one_line(
    original, tmp_path, kind, where, data
):
    _check(original, tmp_path, kind, where, data)


@pytest.mark.slow
@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(**CASES)
def test_corrupted_files_longer_run(original, tmp_path, kind, where, data):
    _check(original, tmp_path, kind, where, data)
