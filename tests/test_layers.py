"""DESIGN §6: lower layers never import upper ones."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "tomrepro"
# Lower index = lower layer. A module may import its own layer and those below it.
LAYERS = ["core", "learning", "loops", "analysis", "report", "faces"]
FACES = {"cli", "sweep", "__main__"}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "tomrepro" or len(parts) < 2:
        return None
    head = parts[1]
    if head in FACES:
        return LAYERS.index("faces")
    return LAYERS.index(head) if head in LAYERS else None


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_its_layer_and_below(path):
    relative = path.relative_to(PACKAGE).with_suffix("")
    own = _layer("tomrepro." + ".".join(relative.parts))
    if own is None:
        return
    for imported in _imports(path):
        other = _layer(imported)
        assert other is None or other <= own, f"{relative} (layer {LAYERS[own]}) imports {imported}"


def test_every_module_belongs_to_a_layer():
    for path in MODULES:
        relative = path.relative_to(PACKAGE).with_suffix("")
        if relative.parts == ("__init__",):
            continue
        assert _layer("tomrepro." + ".".join(relative.parts)) is not None, relative
