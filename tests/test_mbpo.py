"""MBPO loop: every learner runs, runs are deterministic, a SIGKILLed run resumes exactly, and a
continuation starts every learner from the same collected state (real MuJoCo, small sizes)."""

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

from tomrepro.core.buffer_file import read_buffer, read_snapshot
from tomrepro.core.config import load_profile, with_overrides
from tomrepro.core.errors import ConfigError
from tomrepro.learning.dynamics_model import load_dynamics_model
from tomrepro.learning.sac import SAC, SACRun
from tomrepro.loops import mbpo_population
from tomrepro.loops.mbpo import TIMING_COLUMNS, ContinueFrom, MBPORun, run_status
from tomrepro.loops.mbpo_population import (
    RunFailed,
    population_actions,
    population_cpus,
    population_torch_threads,
    population_workers,
    run_population,
)
from tomrepro.loops.planner import torch_threads

from .conftest import REPO_ROOT, copied_run

LEARNERS = ("mle", "tom", "tom-nodisc", "pmac", "vagram")


def smoke(**mbpo):
    return with_overrides(load_profile("smoke", REPO_ROOT / "pipelines"), "mbpo", **mbpo)


def curve(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "curve.csv").drop(columns=list(TIMING_COLUMNS))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mbpo")
    out = {}
    for learner in LEARNERS:
        out[learner] = MBPORun(smoke(), root / learner, learner=learner, progress=False).run()
    return out


@pytest.mark.parametrize("learner", LEARNERS)
def test_every_learner_finishes_with_finite_curve(runs, learner):
    c = curve(runs[learner])
    assert list(c["env_step"]) == [0, 200, 400, 600]
    learned = c[c["env_step"] > 200]  # the random phase has no losses yet
    cols = ["return_mean", "model_train_loss", "model_holdout_loss", "critic_loss", "actor_loss"]
    assert np.isfinite(learned[cols].to_numpy()).all()
    assert (learned["model_rounds"] > 0).all() and (learned["pool_size"] > 0).all()
    status = run_status(runs[learner])
    assert status is not None and status["complete"]
    loaded = read_buffer(runs[learner] / "buffer.h5")
    assert len(loaded.buffer) == 600 and loaded.metadata.complete
    # Versions: 0 in the random phase, one snapshot when the actor starts and per epoch after.
    assert sorted(loaded.snapshot_steps.items()) == [(1, 200), (2, 400)]


def test_learners_use_their_weights(runs):
    tom, mle, vagram = (curve(runs[k]) for k in ("tom", "mle", "vagram"))
    assert (mle["weight_ess_share"].dropna() == 1.0).all()
    # TOM is plain MLE (ESS 1) until D^pi holds recent_size policy rows, weighted after.
    ess = tom["weight_ess_share"].dropna()
    assert ess.iloc[0] == 1.0 and ess.iloc[-1] < 1.0
    assert vagram["weight_max"].dropna().ne(1.0).any()  # g^2 weights, not uniform
    vagram_model, _ = load_dynamics_model(runs["vagram"] / "model.pt")
    mle_model, _ = load_dynamics_model(runs["mle"] / "model.pt")
    assert bool(vagram_model.deterministic) and not bool(mle_model.deterministic)


def test_same_seed_gives_identical_curve_and_buffer(runs, tmp_path):
    again = MBPORun(smoke(), tmp_path / "again", learner="tom", progress=False).run()
    pd.testing.assert_frame_equal(curve(again), curve(runs["tom"]))
    a = read_buffer(again / "buffer.h5").buffer.columns()
    b = read_buffer(runs["tom"] / "buffer.h5").buffer.columns()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other = MBPORun(smoke(), tmp_path / "seed1", learner="tom", seed=1, progress=False).run()
    assert not curve(other)["return_mean"].equals(curve(runs["tom"])["return_mean"])


def test_finished_run_is_skipped_and_other_config_refused(runs):
    before = (runs["mle"] / "curve.csv").stat().st_mtime_ns
    run = MBPORun(smoke(), runs["mle"], learner="mle", progress=False)
    assert run.finished()
    run.run()
    assert (runs["mle"] / "curve.csv").stat().st_mtime_ns == before
    with pytest.raises(Exception, match="different config"):
        MBPORun(smoke(), runs["mle"], learner="pmac", progress=False).run()


def _checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["env_step"])
    except Exception:  # absent, or being written
        return -1


def test_sigkill_then_resume_gives_identical_curve(runs, tmp_path):
    """Killed after its epoch-2 checkpoint (SAC, model, pool and TOM state all in play), then
    resumed: the same curve and buffer as the uninterrupted `runs` fixture (same config)."""
    cmd = [
        sys.executable, "-m", "tomrepro", "mbpo", "--profile", "smoke", "--learner", "tom",
        "--out", str(tmp_path / "killed"), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _checkpoint_step(tmp_path / "killed" / "checkpoint.pt") < 400:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_status(tmp_path / "killed") is None  # not finished
    assert subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True).returncode == 0
    pd.testing.assert_frame_equal(curve(tmp_path / "killed"), curve(runs["tom"]))
    a = read_buffer(tmp_path / "killed" / "buffer.h5").buffer.columns()
    b = read_buffer(runs["tom"] / "buffer.h5").buffer.columns()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.fixture(scope="module")
def collected(smoke_collect, tmp_path_factory) -> Path:
    return copied_run(smoke_collect, tmp_path_factory)


def test_continuation_starts_every_learner_from_the_same_state(collected, tmp_path):
    source = read_buffer(collected)
    k = 4
    step_k = source.snapshot_step(k)
    outs = {}
    for learner in ("mle", "tom"):
        start = ContinueFrom(collected, k, 400)
        outs[learner] = MBPORun(
            smoke(), tmp_path / learner, learner=learner, start=start, progress=False
        ).run()
    first = {k_: curve(v).iloc[0] for k_, v in outs.items()}
    assert first["mle"]["env_step"] == step_k and first["mle"]["policy_version"] == k
    assert first["mle"]["return_mean"] == first["tom"]["return_mean"]
    for learner, root in outs.items():
        cols = read_buffer(root / "buffer.h5").buffer.columns()
        prefix = source.buffer.prefix(step_k).columns()
        n = len(prefix["env_steps"])
        assert len(cols["env_steps"]) == n + 400, learner
        for key in prefix:
            np.testing.assert_array_equal(cols[key][:n], prefix[key])
        # The collector's agent at K is this run's snapshot K; new versions follow per epoch.
        ours, theirs = read_snapshot(root / "buffer.h5", k), read_snapshot(collected, k)
        for name, value in theirs.tensors.items():
            np.testing.assert_array_equal(ours.tensors[name], value)
        assert set(cols["policy_versions"][n:]) == {k, k + 1}
    assert not curve(outs["mle"]).equals(curve(outs["tom"]))


def test_continuation_needs_the_agent_checkpoint(collected, tmp_path):
    (collected.parent / "checkpoints" / "agent_v000002.pt").rename(tmp_path / "moved.pt")
    try:
        with pytest.raises(Exception, match="no agent checkpoint"):
            MBPORun(smoke(), tmp_path / "c", learner="mle", start=ContinueFrom(collected, 2, 100))
    finally:
        (tmp_path / "moved.pt").rename(collected.parent / "checkpoints" / "agent_v000002.pt")


def test_cli_errors_are_one_line(run_cli, collected, tmp_path):
    code, _, err = run_cli(
        "continue", collected, "--snapshot", "99", "--profile", "smoke", "--out", tmp_path / "x"
    )
    assert code == 2 and "no policy snapshot 99" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        "mbpo", "--profile", "smoke", "--learner", "nope", "--out", tmp_path / "y"
    )
    assert code == 2 and "nope" in err
    code, _, err = run_cli(
        "mbpo", "--profile", "smoke", "--env-steps", "0", "--out", tmp_path / "y"
    )
    assert code == 2 and "mbpo.env_steps" in err and len(err.strip().splitlines()) == 1


def _same_run(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(curve(a), curve(b))
    x = read_buffer(a / "buffer.h5").buffer.columns()
    y = read_buffer(b / "buffer.h5").buffer.columns()
    for name, column in x.items():
        np.testing.assert_array_equal(column, y[name], err_msg=name)
    for key, tensor in read_snapshot(a / "buffer.h5", 2).tensors.items():
        np.testing.assert_array_equal(tensor, read_snapshot(b / "buffer.h5", 2).tensors[key])


@pytest.mark.parametrize(
    ("batched", "learners"),
    [(True, LEARNERS), (False, ("tom", "pmac"))],
    ids=["batched", "threads"],
)
def test_a_population_equals_each_run_alone(runs, tmp_path, batched, learners):
    """One process for all five learners as one batched computation (one SAC, stacked model
    rounds: a GPU's way, run on CPU), or for two runs each alone on its own thread at once (the
    CPU's way): each run's curve, buffer and policy snapshots are bit-identical to the same run
    alone."""
    population = [
        MBPORun(smoke(), tmp_path / learner, learner=learner, progress=False)
        for learner in learners
    ]
    with torch_threads(1):  # two workers on two cores, so that the runs overlap
        roots = run_population(population, batched=batched, cpus=2)
    for learner, root in zip(learners, roots, strict=True):
        _same_run(root, runs[learner])


class _FailingRun(MBPORun):
    """Raises in its env step, or as its model round starts, at step `fail_at`."""

    fail_at = 150
    phase = "step_env"

    def step_env(self, state, action=None):
        self._maybe_fail(state, "step_env")
        return super().step_env(state, action)

    def start_round(self, state):
        self._maybe_fail(state, "start_round")
        return super().start_round(state)

    def _maybe_fail(self, state, phase):
        if phase == self.phase and state.loop.step >= self.fail_at:
            raise RuntimeError(f"simulated {phase} failure\nsecond line")


@pytest.mark.parametrize(
    ("phase", "batched"), [("step_env", True), ("start_round", True), ("step_env", False)]
)
def test_a_failing_run_leaves_the_others_unchanged(runs, tmp_path, phase, batched):
    good = MBPORun(smoke(), tmp_path / "mle", learner="mle", progress=False)
    bad = _FailingRun(smoke(), tmp_path / "pmac", learner="pmac", progress=False)
    bad.phase = phase
    with torch_threads(1), pytest.raises(RunFailed, match=f"simulated {phase} failure") as failed:
        run_population([bad, good], batched=batched, cpus=2)
    assert failed.value.finished == [good.paths.root]
    _same_run(good.paths.root, runs["mle"])
    failure = json.loads((bad.paths.root / "failure.json").read_text())
    assert failure["error"] == f"RuntimeError: simulated {phase} failure"
    assert run_status(bad.paths.root) is None  # not finished: a resume picks it up


class _InterruptedRun(MBPORun):
    """Interrupted (as by Ctrl-C in its thread) in its env step at step 150."""

    def step_env(self, state, action=None):
        if state.loop.step >= 150:
            raise KeyboardInterrupt
        return super().step_env(state, action)


def test_an_interrupt_stops_every_run_on_threads_and_they_resume(runs, tmp_path):
    """A run's thread interrupted: the population raises it at once, the other run stops at its
    next step (not at its end) and later resumes to its curve alone."""
    good = MBPORun(smoke(), tmp_path / "mle", learner="mle", progress=False)
    bad = _InterruptedRun(smoke(), tmp_path / "pmac", learner="pmac", progress=False)
    with torch_threads(1), pytest.raises(KeyboardInterrupt):
        run_population([bad, good], batched=False, cpus=2)
    assert run_status(good.paths.root) is None
    MBPORun(smoke(), tmp_path / "mle", learner="mle", progress=False).run()
    _same_run(good.paths.root, runs["mle"])


def test_runs_that_cannot_share_an_agent_are_refused(tmp_path):
    a = MBPORun(smoke(), tmp_path / "a", learner="mle", progress=False)
    b = MBPORun(smoke(env_steps=400), tmp_path / "b", learner="mle", progress=False)
    with pytest.raises(ConfigError, match="must share"):
        run_population([a, b])
    with pytest.raises(ConfigError, match="same directory"):
        run_population([a, MBPORun(smoke(), tmp_path / "a", learner="tom", progress=False)])


_POPULATION = """
import sys
from pathlib import Path
from tomrepro.core.config import load_profile
from tomrepro.loops.mbpo import MBPORun
from tomrepro.loops.mbpo_population import run_population
root = Path(sys.argv[1])
profile = load_profile("smoke", Path(sys.argv[2]))
runs = [MBPORun(profile, root / m, learner=m, progress=False) for m in ("tom", "pmac")]
run_population(runs, batched=True)
"""


@pytest.mark.slow  # ~1 min; the single-run SIGKILL test covers the same resume path in `make test`
def test_sigkill_of_a_population_then_restart_gives_each_run_its_curve(runs, tmp_path):
    """Killed once both runs have checkpointed at epoch 2, restarted: each run's curve and buffer
    equal the run's uninterrupted curve alone."""
    cmd = [sys.executable, "-c", _POPULATION, str(tmp_path), str(REPO_ROOT / "pipelines")]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while min(_checkpoint_step(tmp_path / m / "checkpoint.pt") for m in ("tom", "pmac")) < 400:
        assert proc.poll() is None, "the population ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_status(tmp_path / "tom") is None and run_status(tmp_path / "pmac") is None
    assert subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True).returncode == 0
    for learner in ("tom", "pmac"):
        _same_run(tmp_path / learner, runs[learner])


def test_a_finished_run_drops_out_of_its_population(runs, tmp_path):
    """A run already complete on disk is skipped; the others run as if alone."""
    shutil.copytree(runs["pmac"], tmp_path / "pmac")
    before = (tmp_path / "pmac" / "run.json").read_text()
    population = [
        MBPORun(smoke(), tmp_path / m, learner=m, progress=False) for m in ("pmac", "mle")
    ]
    run_population(population, batched=True)
    assert (tmp_path / "pmac" / "run.json").read_text() == before
    _same_run(tmp_path / "mle", runs["mle"])


@pytest.mark.parametrize(
    ("runs", "cpus", "threads", "workers"),
    [(4, 2, 2, 1), (4, 2, 1, 2), (1, 16, 1, 1), (32, 16, 2, 8), (3, 1, 4, 1)],
)
def test_a_population_steps_on_no_more_workers_than_its_cpus_hold(
    monkeypatch, runs, cpus, threads, workers
):
    """Two torch threads per worker on a 2-core machine thrashed 2.8x (measured). The cores
    are the machine's, or the share a sweep gives the population."""
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert population_workers(runs) == workers
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert population_workers(runs, cpus) == workers


@pytest.mark.parametrize(
    ("cpus", "parallel", "populations", "share"),
    [(2, 2, 4, 1), (2, 2, 1, 2), (16, 1, 3, 16), (16, 8, 2, 8), (3, 4, 4, 1), (2, 8, 3, 1)],
)
def test_a_sweep_shares_its_cores_among_the_populations_running_at_once(
    cpus, parallel, populations, share
):
    """Two populations of CPU runs at once on 2 cores get a core each, not two threads each."""
    assert population_cpus(cpus, parallel, populations) == share


@pytest.mark.parametrize(
    ("runs", "cpus_per_run", "batched", "threads"),
    [(1, 1, False, 1), (1, 2, False, 2), (4, 2, False, 1), (2, 8, False, 4), (4, 2, True, 2)],
)
def test_a_cpu_population_gives_its_cores_to_its_runs_first(runs, cpus_per_run, batched, threads):
    """A run's torch ops gained 0.92-1.06x from a second intra-op thread (measured), two runs on
    a core each twice the throughput; a batched population's one computation takes all cores."""
    assert population_torch_threads(runs, cpus_per_run, batched) == threads


def _open_population(runs: list[MBPORun]) -> tuple[SAC, list]:
    """The runs opened on one population agent, as the loop opens them."""
    first, task = runs[0], runs[0].task
    low, high = (np.asarray(b, dtype=np.float32) for b in first.agent_shape()[2:4])
    generators = [run.sac_generator() for run in runs]
    sac = SAC(task.obs_dim, task.act_dim, low, high, first.sac_cfg, first.device, generators)
    return sac, [(run, run.open(SACRun(sac, r))) for r, run in enumerate(runs)]


def test_one_actor_call_gives_each_run_its_own_action(tmp_path):
    """A GPU population's env-step actions come from one actor call: each run's row gets the
    action its own actor gives for its observation and noise (up to rounding: the call runs here
    on CPU), and a run whose policy has not started gets none."""
    runs = [
        MBPORun(smoke(), tmp_path / str(i), learner=m, seed=i, progress=False)
        for i, m in enumerate(("mle", "tom", "mle"))
    ]
    sac, items = _open_population(runs)
    for _, state in items[:2]:
        state.loop.step = runs[0].schedule.policy_start + 7
    actions = population_actions(sac, items)
    assert actions[2] is None
    alone = [run._policy_action(state, state.noise[0].at(state.loop.step)) for run, state in items]
    for action, own in zip(actions[:2], alone[:2], strict=True):
        np.testing.assert_allclose(action, own, rtol=1e-6, atol=1e-7)
    assert not np.allclose(alone[0], alone[1])  # the rows are the runs' own, not one run's
    for _, state in items:
        state.env.close()


def test_a_population_acting_in_one_call_runs_to_its_end(tmp_path, monkeypatch):
    """The GPU's way of acting, forced on CPU for a batched population: every step's actions
    come from the one call and both runs finish with finite curves."""
    calls = []

    def counted(sac, items):
        calls.append(len(items))
        return population_actions(sac, items)

    monkeypatch.setattr(mbpo_population, "batches_runs", lambda device: True)
    monkeypatch.setattr(mbpo_population, "population_actions", counted)
    runs = [MBPORun(smoke(), tmp_path / m, learner=m, progress=False) for m in ("mle", "tom")]
    for root in run_population(runs, batched=True):
        last = curve(root).iloc[-1]
        assert last["env_step"] == smoke().mbpo.env_steps and np.isfinite(last["return_mean"])
    assert len(calls) == smoke().mbpo.env_steps and set(calls) == {2}
