"""A profile name resolves from any directory: the project's pipelines/ found upwards, the
source checkout's, or $TOMREPRO_PROFILE_DIR first; a miss says where it looked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tomrepro.core import profile_paths
from tomrepro.core.config import PROFILE_DIR, load_profile, resolve_profile_path
from tomrepro.core.errors import ConfigError
from tomrepro.core.profile_paths import ENV_VAR, find_profile

SMOKE = REPO_ROOT / "pipelines" / "smoke.yaml"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _profile(folder: Path, name: str, seed: int) -> Path:
    """A copy of the smoke profile with another seed, so the file it came from is visible."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(SMOKE.read_text())
    raw.pop("name", None)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**raw, "seed": seed}))
    return path


def test_a_name_resolves_from_a_subdirectory_of_the_project(monkeypatch):
    monkeypatch.chdir(REPO_ROOT / "tomrepro" / "core")
    assert resolve_profile_path("smoke") == SMOKE
    assert load_profile("smoke").name == "smoke"


def test_a_name_resolves_from_an_unrelated_directory_through_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_profile_path("smoke") == SMOKE.resolve()
    assert load_profile("default").name == "default"


def test_the_cli_takes_a_profile_name_outside_the_project(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("finite-mdp", "--profile", "smoke", "--mdps", "2")
    assert code == 0, err
    assert "C5" in out


def test_the_environment_variable_comes_first(tmp_path, monkeypatch):
    own = _profile(tmp_path / "mine", "smoke", seed=12345)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    monkeypatch.chdir(tmp_path)
    assert resolve_profile_path("smoke") == own.resolve()
    assert load_profile("smoke").seed == 12345
    # Names it lacks still come from the project.
    assert load_profile("default").name == "default"
    monkeypatch.chdir(REPO_ROOT)  # it also wins over the project's own pipelines/
    assert load_profile("smoke").seed == 12345


def test_the_environment_variable_must_name_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=f"{ENV_VAR}=.*absent is not a directory"):
        load_profile("smoke")


def test_the_nearest_project_with_a_marker_wins(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    own = _profile(project / "pipelines", "smoke", seed=777)
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(project / "a" / "b")
    assert find_profile("smoke") == own.resolve()
    assert load_profile("smoke").seed == 777


def test_a_pipelines_folder_without_a_project_marker_is_not_the_project(tmp_path, monkeypatch):
    _profile(tmp_path / "ci" / "pipelines", "smoke", seed=5)
    (tmp_path / "ci" / "jobs").mkdir()
    monkeypatch.chdir(tmp_path / "ci" / "jobs")
    assert find_profile("smoke") == SMOKE.resolve()
    monkeypatch.chdir(tmp_path / "ci")  # ./pipelines itself always counts, as before
    assert load_profile("smoke").seed == 5


def test_an_unknown_name_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_profile("nightly")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown profile 'nightly': no nightly.yaml in ")
    assert str(REPO_ROOT / "pipelines") in message
    assert f"looked from {tmp_path.resolve()}" in message
    assert "known: default, paper, smoke" in message


def test_with_no_profile_folder_anywhere_the_error_names_the_search(tmp_path, monkeypatch):
    monkeypatch.setattr(profile_paths, "SOURCE_ROOT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_profile("smoke")
    message = str(info.value)
    assert "\n" not in message
    assert f"no pipelines/ directory found from {tmp_path.resolve()}" in message
    assert ENV_VAR in message and "dvc.yaml or pyproject.toml" in message


def test_yaml_paths_and_an_explicit_folder_behave_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_profile_path(SMOKE) == SMOKE
    with pytest.raises(ConfigError, match=r"profile file .*missing\.yaml does not exist"):
        resolve_profile_path(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"no .*empty/smoke\.yaml \(known: none\)"):
        load_profile("smoke", tmp_path / "empty")
    assert load_profile("smoke", REPO_ROOT / "pipelines").name == "smoke"
    assert resolve_profile_path("smoke", PROFILE_DIR) == SMOKE.resolve()  # the default: search
