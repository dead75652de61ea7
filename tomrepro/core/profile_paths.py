"""Where a profile NAME's YAML file is, wherever `tomrepro` is run from.

A profile is either a YAML path (suffix `.yaml`/`.yml`, taken as given) or a name such as
`smoke`, looked up as `<dir>/<name>.yaml` in these directories, first match wins:

1. `$TOMREPRO_PROFILE_DIR`, when set (it must be a directory): your own profiles come first.
2. The project's `pipelines/`: `./pipelines` if the current directory has one, else that of the
   nearest parent directory holding `pipelines/` beside a `dvc.yaml` or `pyproject.toml`. The
   marker keeps an unrelated folder that happens to be called `pipelines` (CI configs, say) from
   being taken for the project's; only the nearest such project is searched.
3. `pipelines/` beside the package source, which an editable install (`pip install -e .`) keeps
   in the checkout, so `--profile smoke` works from any directory.

An explicit folder (`profile_in`) is the only place looked, as the tests and callers that pass
`profile_dir` expect.
"""

from __future__ import annotations

import os
from pathlib import Path

from tomrepro.core.errors import ConfigError

ENV_VAR = "TOMREPRO_PROFILE_DIR"
DIR_NAME = "pipelines"
PROJECT_MARKERS = ("dvc.yaml", "pyproject.toml")
YAML_SUFFIXES = (".yaml", ".yml")
# The checkout root in an editable install: tomrepro/core/profile_paths.py -> parents[2].
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# The planner's estimate in a profile's data folder (datasets/<profile>/): the `plan` stage
# writes it (`tomrepro plan --out`), and `tomrepro analyse --data` reads it from there.
PLAN_FILE = "plan.json"


def is_profile_path(profile: str | Path) -> bool:
    """A YAML path rather than a name."""
    return Path(profile).suffix in YAML_SUFFIXES


def _yaml_file(profile: str | Path) -> Path:
    path = Path(profile)
    if not path.is_file():
        raise ConfigError(f"profile file {path} does not exist")
    return path


def _known(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def profile_in(profile: str | Path, profile_dir: Path) -> Path:
    """The profile's file when `profile_dir` is the one place to look (or a YAML path)."""
    if is_profile_path(profile):
        return _yaml_file(profile)
    path = Path(profile_dir) / f"{profile}.yaml"
    if not path.is_file():
        known = _known(Path(profile_dir))
        raise ConfigError(
            f"unknown profile {str(profile)!r}: no {path} (known: {', '.join(known) or 'none'})"
        )
    return path


def project_profile_dir(start: Path) -> Path | None:
    """`start/pipelines`, else `pipelines/` of the nearest parent with a project marker."""
    start = start.resolve()
    if (start / DIR_NAME).is_dir():
        return start / DIR_NAME
    for folder in start.parents:
        if (folder / DIR_NAME).is_dir() and any((folder / m).is_file() for m in PROJECT_MARKERS):
            return folder / DIR_NAME
    return None


def profile_dirs(cwd: Path | None = None) -> list[Path]:
    """The directories a profile name is looked up in, in order (only those that exist)."""
    dirs = []
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_dir():
            raise ConfigError(f"{ENV_VAR}={env} is not a directory")
        dirs.append(Path(env).resolve())
    project = project_profile_dir(Path.cwd() if cwd is None else cwd)
    if project is not None:
        dirs.append(project)
    if (SOURCE_ROOT / DIR_NAME).is_dir():
        dirs.append(SOURCE_ROOT / DIR_NAME)
    return list(dict.fromkeys(dirs))  # the project may be the source checkout


def find_profile(profile: str | Path, cwd: Path | None = None) -> Path:
    """The profile's file: a YAML path as given, a name from the first of `profile_dirs`
    holding `<name>.yaml`. Not found: one `ConfigError` line saying where it looked."""
    if is_profile_path(profile):
        return _yaml_file(profile)
    dirs = profile_dirs(cwd)
    for folder in dirs:
        path = folder / f"{profile}.yaml"
        if path.is_file():
            return path
    here = (Path.cwd() if cwd is None else cwd).resolve()
    order = (
        f"${ENV_VAR}, ./{DIR_NAME} or a parent's beside {' or '.join(PROJECT_MARKERS)}, "
        f"then {SOURCE_ROOT / DIR_NAME}"
    )
    if not dirs:
        raise ConfigError(
            f"unknown profile {str(profile)!r}: no {DIR_NAME}/ directory found from {here} "
            f"(searched {order}; set {ENV_VAR} or pass a YAML path)"
        )
    known = ", ".join(sorted({name for folder in dirs for name in _known(folder)})) or "none"
    raise ConfigError(
        f"unknown profile {str(profile)!r}: no {profile}.yaml in "
        f"{', '.join(str(d) for d in dirs)} (looked from {here}; known: {known})"
    )
