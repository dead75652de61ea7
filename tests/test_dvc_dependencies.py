"""dvc.yaml's code deps cover every file its commands can import, and it declares few metrics.

A stage whose deps miss a file it runs is not rerun when that file changes, and `dvc status`
says all is well. The closure is computed from the code (`tomrepro.core.code_closure`), so the
lists in dvc.yaml cannot drift unnoticed.
"""

from __future__ import annotations

import ast
import json
import shlex
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.synthetic_stage_outputs import write_stage_outputs
from tomrepro.core.code_closure import (
    UnknownCommandError,
    cli_commands,
    command_closure,
    command_names,
    module_closure,
)

DVC_YAML = REPO_ROOT / "dvc.yaml"
HEADLINE = "datasets/${profile}/analysis/headline.json"
# Metric files dvc.yaml may declare: each is a group of `dvc exp show` columns.
MAX_METRIC_FILES = 3


def _stages() -> dict[str, dict]:
    return yaml.safe_load(DVC_YAML.read_text())["stages"]


def _paths(entries: list) -> list[str]:
    """A deps/outs/metrics list: plain strings or one-key mappings {path: options}."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def stage_commands(cmd: str) -> list[str]:
    """The `tomrepro` subcommands a stage's cmd runs (pieces joined by `&&`; others ignored)."""
    commands = []
    for piece in cmd.split("&&"):
        words = shlex.split(piece)
        if not words or words[0] != "tomrepro":
            continue
        rest = words[1:]
        while rest and rest[0].startswith("-"):
            takes_value = rest[0] == "--time-log"
            rest = rest[2:] if takes_value else rest[1:]
        assert rest, f"no subcommand in {piece!r}"
        commands.append(rest[0])
    return commands


def covered(path: str, deps: list[str]) -> bool:
    """A dep covers a file that it names or that lies in a folder it names."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def missing_code_deps(stage: dict, root: Path = REPO_ROOT) -> list[str]:
    """The files the stage's commands can import that none of its deps covers."""
    needed: set[str] = set()
    for command in stage_commands(stage["cmd"]):
        needed |= command_closure(command, root)
    deps = _paths(stage.get("deps"))
    return sorted(f for f in needed if not covered(f, deps))


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_cover_the_code_its_commands_import(name):
    stage = _stages()[name]
    assert stage_commands(stage["cmd"]), f"stage {name} runs no tomrepro command"
    missing = missing_code_deps(stage)
    assert not missing, f"stage {name} misses code deps: {', '.join(missing)}"


def test_code_deps_name_files_that_exist():
    for name, stage in _stages().items():
        for dep in _paths(stage.get("deps")):
            if dep.startswith("tomrepro"):
                assert (REPO_ROOT / dep).exists(), f"stage {name}: dep {dep} does not exist"


def test_the_check_reports_a_removed_code_dependency():
    stage = _stages()["collect"]
    code_deps = [d for d in _paths(stage["deps"]) if d.startswith("tomrepro/")]
    needed = set().union(*(command_closure(c, REPO_ROOT) for c in stage_commands(stage["cmd"])))
    already = set(missing_code_deps(stage))  # empty unless the test above fails too
    removed_some = False
    for removed in code_deps:
        lost = {f for f in needed if covered(f, [removed])}
        if not lost:
            continue
        broken = {**stage, "deps": [d for d in stage["deps"] if d != removed]}
        assert missing_code_deps(broken) == sorted(already | lost), removed
        removed_some = True
    assert removed_some
    assert missing_code_deps({**stage, "deps": []}) == sorted(needed)


def test_stage_commands_skip_global_options_and_other_programs():
    cmd = (
        "tomrepro validate a.h5 && tomrepro --time-log t.json inspect --json a.h5 > x.tmp && "
        "mv x.tmp x && tomrepro --time-log=t.json finite-mdp --out f.json"
    )
    assert stage_commands(cmd) == ["validate", "inspect", "finite-mdp"]


# --- the closure itself, on a small hand-written package ---------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def toy(tmp_path) -> Path:
    return _write(
        tmp_path,
        {
            "tomrepro/__init__.py": "",
            "tomrepro/cli.py": """
                import click
                from tomrepro.core.errors import Oops

                @click.group()
                def cli():
                    pass

                @cli.result_callback()
                def _after(*a):
                    from tomrepro.core import stage_time

                def _shared():
                    from tomrepro.loops.helper import h

                @cli.command()
                def plain():
                    from tomrepro.loops import walk

                @cli.command("given-name")
                def anything_command():
                    _shared()

                @cli.command()
                def suffixed_command():
                    pass

                @cli.command(name="kw")
                def other():
                    from tomrepro.loops.unused import nothing
            """,
            "tomrepro/core/__init__.py": "",
            "tomrepro/core/errors.py": "class Oops(Exception): ...\n",
            "tomrepro/core/stage_time.py": "",
            "tomrepro/core/typing_only.py": "",
            "tomrepro/core/lazy.py": "",
            "tomrepro/loops/__init__.py": "",
            "tomrepro/loops/walk.py": """
                from typing import TYPE_CHECKING
                from . import step
                from ..core import lazy as _lazy
                if TYPE_CHECKING:
                    from tomrepro.core.typing_only import T
            """,
            "tomrepro/loops/step.py": "import numpy\nfrom .walk import *\n",
            "tomrepro/loops/helper.py": "def h(): ...\n",
            "tomrepro/loops/unused.py": "",
        },
    )


def test_click_names_follow_click(toy):
    assert command_names(toy) == ["given-name", "kw", "plain", "suffixed"]
    import click

    @click.command()
    def suffixed_command():
        pass

    assert suffixed_command.name == "suffixed", "click's naming rule changed; see code_closure"


def test_command_closure_follows_relative_submodule_and_lazy_imports(toy):
    common = {
        "tomrepro/__init__.py",
        "tomrepro/cli.py",
        "tomrepro/core/__init__.py",
        "tomrepro/core/errors.py",
        "tomrepro/core/stage_time.py",
    }
    assert command_closure("plain", toy) == common | {
        "tomrepro/loops/__init__.py",
        "tomrepro/loops/walk.py",
        "tomrepro/loops/step.py",
        "tomrepro/core/lazy.py",
        "tomrepro/core/typing_only.py",
    }
    assert command_closure("given-name", toy) == common | {
        "tomrepro/loops/__init__.py",
        "tomrepro/loops/helper.py",
    }
    assert command_closure("suffixed", toy) == common
    assert module_closure(["tomrepro.loops.step"], toy) == {
        "tomrepro/__init__.py",
        "tomrepro/core/__init__.py",
        "tomrepro/core/lazy.py",
        "tomrepro/core/typing_only.py",
        "tomrepro/loops/__init__.py",
        "tomrepro/loops/step.py",
        "tomrepro/loops/walk.py",
    }
    with pytest.raises(UnknownCommandError, match="known: given-name, kw, plain, suffixed"):
        command_closure("nope", toy)


def test_every_cli_command_of_the_project_has_a_closure():
    tree = ast.parse((REPO_ROOT / "tomrepro" / "cli.py").read_text())
    for name in cli_commands(tree):
        closure = command_closure(name, REPO_ROOT)
        assert "tomrepro/cli.py" in closure and "tomrepro/core/stage_time.py" in closure


# --- metrics ------------------------------------------------------------------------------------


def test_dvc_yaml_declares_few_metrics_with_the_headline_among_them():
    metrics = {name: _paths(s.get("metrics")) for name, s in _stages().items()}
    declared = [m for files in metrics.values() for m in files]
    assert len(declared) <= MAX_METRIC_FILES, declared
    assert HEADLINE in metrics["analyse"]
    analyse_deps = _paths(_stages()["analyse"]["deps"])
    for stage, entries in _stages().items():
        for out in _paths(entries.get("outs")):
            if "/stage_times/" in out and stage not in ("analyse", "report"):
                assert out in analyse_deps, f"headline's wall time reads {out}: not a dep"


def test_headline_holds_verdicts_wall_time_and_final_returns(tmp_path, run_cli):
    data = write_stage_outputs(tmp_path / "data", effect=True)
    (data / "stage_times" / "analyse.json").write_text(json.dumps({"wall_seconds": 999.0}))
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", data)
    assert code == 0, err
    headline = json.loads((data / "analysis" / "headline.json").read_text())
    claims = json.loads((data / "analysis" / "claims.json").read_text())["claims"]
    assert set(headline["claims"]) == set(claims)
    for row, result in claims.items():
        estimate = result["estimate"]["value"] if result["estimate"] else None
        assert headline["claims"][row] == {"verdict": result["verdict"], "estimate": estimate}
    # The synthetic stage times are 60, 120 and 180 s; analyse's own (stale) record is left out.
    assert headline["wall_seconds"] == {
        "total": 360.0,
        "stages": "collect,mbpo_scratch,offline_study",
    }
    finals = headline["final_return"]
    assert set(finals) == {
        "InvertedPendulum-v5, from scratch",
        "Hopper-v5, continued from snapshot 15",
    }
    # Logistic curves to 1000 (synthetic_stage_outputs.curves_table), no final gap.
    for cell in finals.values():
        assert set(cell) == {"mle", "tom"}
        assert all(abs(v - 1000) < 30 for v in cell.values())
    # each leaf is a dvc exp show column: per row verdict and estimate, total wall time and its
    # stages, the SAC-update time, and 4 final returns
    assert _leaves(headline) == 2 * len(claims) + 2 + 1 + 4
    assert headline["sac_update_ms"] > 0


def _leaves(value) -> int:
    """Scalar values of a nested mapping (DVC flattens metrics to one column per leaf)."""
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    assert value is None or isinstance(value, str | int | float), value
    return 1


def test_headline_without_mbpo_or_stage_times(tmp_path, run_cli):
    data = write_stage_outputs(tmp_path / "data", effect=False)
    for path in [*(data / "stage_times").iterdir(), *data.glob("mbpo_*_curves.csv")]:
        path.unlink()
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", data)
    assert code == 0, err
    headline = json.loads((data / "analysis" / "headline.json").read_text())
    assert headline["wall_seconds"] == {"total": 0.0, "stages": ""}
    assert headline["final_return"] == {}
    assert headline["claims"]["C3 (MBPO)"]["estimate"] is None
