"""Profiles: every shipped profile loads; every kind of mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tomrepro.core.config import load_profile
from tomrepro.core.errors import ConfigError

PROFILES = REPO_ROOT / "pipelines"


@pytest.mark.parametrize("name", ["smoke", "default", "paper"])
def test_shipped_profiles_load(name):
    cfg = load_profile(name, PROFILES)
    assert cfg.name == name
    assert 0 < cfg.sac.gamma < 1


def test_profiles_differ_only_in_the_file(tmp_path):
    smoke, default = load_profile("smoke", PROFILES), load_profile("default", PROFILES)
    assert smoke.random_buffer.env_steps < default.random_buffer.env_steps


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((PROFILES / "smoke.yaml").read_text())
    edit(raw)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


CASES = {
    "unknown top-level key": (lambda r: r.update(sed=1), "sed: unknown key"),
    "unknown nested key": (lambda r: r["sac"].update(gama=0.9), "sac.gama: unknown key"),
    "wrong type": (
        lambda r: r["random_buffer"].update(env_steps="many"),
        "random_buffer.env_steps",
    ),
    "float for an int": (
        lambda r: r["random_buffer"].update(env_steps=10.5),
        "random_buffer.env_steps",
    ),
    "negative size": (
        lambda r: r["random_buffer"].update(env_steps=-5),
        "random_buffer.env_steps: Input should be greater than 0",
    ),
    "zero batch": (lambda r: r["sac"].update(batch_size=0), "sac.batch_size"),
    "gamma of one": (
        lambda r: r["sac"].update(gamma=1.0),
        "sac.gamma: Input should be less than 1",
    ),
    "negative gamma": (lambda r: r["sac"].update(gamma=-0.1), "sac.gamma"),
    "negative seed": (lambda r: r.update(seed=-1), "seed"),
    "bad device": (lambda r: r.update(device="tpu"), "device"),
    "unknown learner": (lambda r: r["mbpo"].update(learners=["mle", "mve"]), "mbpo.learners"),
    "repeated seeds": (lambda r: r["mbpo"].update(seeds=[0, 0]), "seeds has repeated entries"),
    "real ratio above one": (lambda r: r["mbpo"].update(real_ratio=1.5), "mbpo.real_ratio"),
    "unknown mbpo task": (
        lambda r: r["mbpo"].update(tasks=["Hoper-v5"]),
        "unknown task 'Hoper-v5'",
    ),
    "backwards schedule": (
        lambda r: r["mbpo"].update(rollout_schedule=[20, 10, 1, 15]),
        "rollout_schedule must be",
    ),
    "unknown task": (
        lambda r: r["random_buffer"].update(task="Hopper-v9"),
        "random_buffer.task: unknown task 'Hopper-v9'",
    ),
    "missing section": (lambda r: r.pop("random_buffer"), "random_buffer: Field required"),
    "empty hidden sizes": (lambda r: r["sac"].update(hidden_sizes=[]), "sac.hidden_sizes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_profile_is_one_line_naming_the_key(case, tmp_path):
    edit, expected = CASES[case]
    with pytest.raises(ConfigError) as info:
        load_profile(_write(tmp_path, edit), PROFILES)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message, message


def test_bad_profile_through_the_cli_exits_2(tmp_path, run_cli):
    path = _write(tmp_path, lambda r: r["sac"].update(gamma=1.5))
    code, _, err = run_cli("random-buffer", "--profile", path, "--out", tmp_path / "o.h5")
    assert code == 2 and err.count("\n") == 1 and "sac.gamma" in err
    assert not (tmp_path / "o.h5").exists()


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 0\nrandom_buffer: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_profile(path, PROFILES)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: default, paper, smoke"):
        load_profile("nightly", PROFILES)


def test_mbpo_rollout_schedule_grows_linearly():
    mbpo = load_profile("smoke", PROFILES).mbpo
    assert mbpo is not None and mbpo.rollout_length_at(50) == mbpo.rollout_length
    scheduled = mbpo.model_copy(update={"rollout_schedule": (20, 100, 1, 15)})
    lengths = [scheduled.rollout_length_at(e) for e in (0, 20, 60, 100, 300)]
    assert lengths == [1, 1, 8, 15, 15]
