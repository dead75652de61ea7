"""Shared fixtures: small real buffers from real MuJoCo, and a CLI runner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tomrepro.cli import main
from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import BufferMetadata, PolicySnapshot, write_buffer
from tomrepro.core.tasks import get_task
from tomrepro.loops.rollout import random_rollout

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs a worker per core: one torch thread each (and in the processes they
    # start), since more threads than cores thrash.
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_collect(tmp_path_factory) -> Path:
    """Every collect run of the smoke profile, made once per session (several modules read
    them). Never written to: a module takes its own copy (`copied_collect`, `copied_run`)."""
    from tomrepro.core.config import load_profile
    from tomrepro.loops.collect import collect_runs

    out = tmp_path_factory.mktemp("smoke_collect") / "runs"
    collect_runs(load_profile("smoke", REPO_ROOT / "pipelines"), out, progress=False)
    return out


def copied_collect(smoke_collect: Path, tmp_path_factory) -> Path:
    """A copy of every smoke collect run, as `collect_runs` leaves them."""
    return Path(shutil.copytree(smoke_collect, tmp_path_factory.mktemp("collect") / "runs"))


def copied_run(smoke_collect: Path, tmp_path_factory) -> Path:
    """The buffer of a copy of the first smoke collect run: what `Collector(smoke).run()`
    makes (the first seed is a collector's default)."""
    from tomrepro.core.config import load_profile
    from tomrepro.loops.collect import run_dir

    first = run_dir(smoke_collect, load_profile("smoke", REPO_ROOT / "pipelines").collect.seeds[0])
    return Path(shutil.copytree(first, tmp_path_factory.mktemp("collect") / "run")) / "buffer.h5"


@pytest.fixture(scope="session")
def hopper_buffer() -> ReplayBuffer:
    """600 real Hopper-v5 random-policy transitions (many short episodes)."""
    return random_rollout(get_task("Hopper-v5"), 600, seed=3)


@pytest.fixture(scope="session")
def snapshots() -> list[PolicySnapshot]:
    """Two Hopper-v5 actor snapshots (11 -> 8 -> 6 = 2 x 3: mean and log-std)."""
    rng = np.random.default_rng(0)

    def actor() -> dict[str, np.ndarray]:
        shapes = {
            "net.layers.0.weight": (1, 11, 8),
            "net.layers.0.bias": (1, 1, 8),
            "net.layers.1.weight": (1, 8, 6),
            "net.layers.1.bias": (1, 1, 6),
        }
        tensors = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        return {**tensors, "action_scale": np.ones(3, np.float32),
                "action_bias": np.zeros(3, np.float32)}  # fmt: skip

    return [PolicySnapshot(v, 200 * v, actor()) for v in (1, 2)]


@pytest.fixture
def buffer_file(tmp_path: Path, hopper_buffer: ReplayBuffer, snapshots) -> Path:
    """A valid schema-v1 file whose policy versions step up at the snapshots' env steps."""
    cols = {k: v.copy() for k, v in hopper_buffer.columns().items()}
    cols["policy_versions"] = (cols["env_steps"] // 200).astype(np.int64)
    path = tmp_path / "buffer.h5"
    write_buffer(
        path, ReplayBuffer.from_columns(cols), BufferMetadata("Hopper-v5", seed=3), snapshots
    )
    return path


@pytest.fixture
def run_cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `tomrepro ARGS` in-process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
