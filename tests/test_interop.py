"""Minari and D4RL-style import/export: exact round trips, a dataset made with Minari's own API
on a real MuJoCo env, foreign D4RL files without next observations, one-line errors, and the
offline study on an imported buffer."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr

from tomrepro.core.buffer_file import read_buffer
from tomrepro.core.tasks import get_task

from .conftest import REPO_ROOT, copied_run


@pytest.fixture(autouse=True)
def minari_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def assert_same_rows(a_path, b_path):
    a = read_buffer(a_path, deep=True).buffer.columns()
    b = read_buffer(b_path, deep=True).buffer.columns()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_buffer_minari_buffer_round_trip_is_exact(buffer_file, tmp_path, run_cli):
    code, _, err = run_cli("export-minari", buffer_file, "--dataset-id", "tomrepro/hopper/test-v0")
    assert code == 0, err
    code, _, err = run_cli(
        "import-minari", "tomrepro/hopper/test-v0", "--out", tmp_path / "back.h5"
    )
    assert code == 0, err
    assert_same_rows(buffer_file, tmp_path / "back.h5")
    meta = read_buffer(tmp_path / "back.h5").metadata
    assert meta.task_id == "Hopper-v5" and meta.policy_versions_recorded
    code, _, err = run_cli("export-minari", buffer_file, "--dataset-id", "tomrepro/hopper/test-v0")
    assert code == 2 and "already exists" in err


def test_buffer_d4rl_buffer_round_trip_is_exact(buffer_file, tmp_path, run_cli):
    code, _, err = run_cli("export-d4rl", buffer_file, "--out", tmp_path / "d4rl.hdf5")
    assert code == 0, err
    with h5py.File(tmp_path / "d4rl.hdf5") as f:
        assert {"observations", "actions", "rewards", "terminals", "timeouts"} <= set(f)
    code, _, err = run_cli(
        "import-d4rl", tmp_path / "d4rl.hdf5", "--task", "Hopper-v5", "--out", tmp_path / "b.h5"
    )
    assert code == 0, err
    assert_same_rows(buffer_file, tmp_path / "b.h5")


def test_foreign_d4rl_without_next_observations(hopper_buffer, tmp_path, run_cli):
    c = hopper_buffer.columns()
    path = tmp_path / "foreign.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = c["observations"].astype(np.float64)
        f["actions"] = c["actions"]
        f["rewards"] = c["rewards"]
        f["terminals"] = c["terminations"]
        f["timeouts"] = c["truncations"]
    code, _, err = run_cli("import-d4rl", path, "--task", "Hopper-v5", "--out", tmp_path / "f.h5")
    assert code == 0, err
    loaded = read_buffer(tmp_path / "f.h5", deep=True)
    got = loaded.buffer.columns()
    last = np.r_[c["episode_ids"][1:] != c["episode_ids"][:-1], True]
    np.testing.assert_array_equal(got["observations"], c["observations"][~last])
    np.testing.assert_array_equal(got["next_observations"], c["next_observations"][~last])
    np.testing.assert_array_equal(got["episode_ids"], c["episode_ids"][~last])
    assert not loaded.metadata.policy_versions_recorded
    assert (got["policy_versions"] == 0).all()
    assert loaded.metadata.config["dropped_rows"] == int(last.sum())


def test_minari_dataset_made_with_minari_api_on_mujoco_imports_and_validates(tmp_path, run_cli):
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    task = get_task("InvertedPendulum-v5")
    env = task.make_env()
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(5):
        obs = [env.reset(seed=i)[0]]
        actions, rewards, terms, truncs = [], [], [], []
        while True:
            action = rng.uniform(-3, 3, size=1).astype(np.float32)
            o, r, term, trunc, _ = env.step(action)
            obs.append(o)
            actions.append(action)
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
            if term or trunc:
                break
        episodes.append(
            EpisodeBuffer(
                id=i, observations=np.array(obs), actions=np.array(actions), rewards=rewards,
                terminations=terms, truncations=truncs,
            )
        )  # fmt: skip
    minari.create_dataset_from_buffers(
        "pendulum/random-v0",
        episodes,
        env=env.spec,
        eval_env=env.spec,
        algorithm_name="uniform random",
        author="tomrepro tests",
        author_email="tests@localhost",
        description="random InvertedPendulum-v5 episodes",
    )
    env.close()
    out = tmp_path / "imported.h5"
    code, _, err = run_cli("import-minari", "pendulum/random-v0", "--out", out)
    assert code == 0, err
    code, _, err = run_cli("validate", out)
    assert code == 0, err
    loaded = read_buffer(out)
    assert loaded.metadata.task_id == "InvertedPendulum-v5"
    assert not loaded.metadata.policy_versions_recorded
    assert len(loaded.buffer) == sum(len(e.rewards) for e in episodes)
    c = loaded.buffer.columns()
    assert c["terminations"].sum() == 5 and (c["episode_steps"][c["episode_ids"] == 4][0] == 0)


def test_import_errors_are_one_line(tmp_path, run_cli, minari_home):
    code, _, err = run_cli("import-minari", "nobody/nothing-v0", "--out", tmp_path / "x.h5")
    assert code == 2 and "no local Minari dataset" in err and err.count("\n") == 1
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f["observations"] = np.zeros((5, 11), np.float32)
        f["actions"] = np.zeros((5, 3), np.float32)
        f["rewards"] = np.zeros(4, np.float32)
        f["terminals"] = np.zeros(5, bool)
    code, _, err = run_cli("import-d4rl", bad, "--task", "Hopper-v5", "--out", tmp_path / "y.h5")
    assert code == 2 and "missing key(s) timeouts" in err
    with h5py.File(bad, "a") as f:
        f["timeouts"] = np.zeros(5, bool)
    code, _, err = run_cli("import-d4rl", bad, "--task", "Hopper-v5", "--out", tmp_path / "y.h5")
    assert (code == 2 and "rewards has 4" in err) or "has 5 rows" in err
    code, _, err = run_cli("import-d4rl", bad, "--task", "Walker2d-v5", "--out", tmp_path / "y.h5")
    assert code == 2
    assert not (tmp_path / "y.h5").exists()


def test_unknown_env_needs_an_explicit_task(tmp_path, run_cli, buffer_file):
    import json

    code, _, err = run_cli("export-minari", buffer_file, "--dataset-id", "not an id")
    assert code == 2 and "Malformed dataset ID" in err and err.count("\n") == 1
    run_cli("export-minari", buffer_file, "--dataset-id", "x/hopper/y-v0")
    meta_path = tmp_path / "minari" / "x" / "hopper" / "y-v0" / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    spec = json.loads(meta["env_spec"])
    spec["id"] = "Hopper-v99"
    meta["env_spec"] = json.dumps(spec)
    meta_path.write_text(json.dumps(meta))
    code, _, err = run_cli("import-minari", "x/hopper/y-v0", "--out", tmp_path / "z.h5")
    assert code == 2 and "not in the task registry" in err
    code, _, err = run_cli(
        "import-minari", "x/hopper/y-v0", "--task", "Hopper-v5", "--out", tmp_path / "z.h5"
    )
    assert code == 0, err


def test_offline_study_runs_on_an_imported_buffer(
    smoke_collect, tmp_path_factory, tmp_path, run_cli
):

    collected = copied_run(smoke_collect, tmp_path_factory)
    assert run_cli("export-minari", collected, "--dataset-id", "smoke/sac-v0")[0] == 0
    out = tmp_path / "imported.h5"
    code, _, err = run_cli(
        "import-minari", "smoke/sac-v0", "--out", out, "--snapshots-from", collected
    )
    assert code == 0, err
    assert_same_rows(collected, out)
    one_cell_per_learner = tmp_path / "small.yaml"
    one_cell_per_learner.write_text(
        (REPO_ROOT / "pipelines" / "smoke.yaml")
        .read_text()
        .replace("  snapshots: [2, 4]", "  snapshots: [4]")
        .replace("  learners: [mle, tom, tom-nodisc, pmac]", "  learners: [mle, tom]")
        .replace("  seeds: [0, 1]\n  eval_episodes", "  seeds: [0]\n  eval_episodes")
    )
    code, _, err = run_cli(
        "offline-study", out, "--profile", one_cell_per_learner, "--out", tmp_path / "study",
        "--quiet",
    )  # fmt: skip
    assert code == 0, err
    study = xr.load_dataset(tmp_path / "study" / "study.nc", engine="h5netcdf")
    assert dict(study.sizes)["learner"] == 2 and dict(study.sizes)["snapshot"] == 1
