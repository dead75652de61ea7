"""Which source files of the `tomrepro` package a command can run, found statically.

A DVC stage must depend on every file its command may execute, or an edit to that file leaves
the stage's outputs stale while `dvc status` says all is well. Listing the files by hand drifts,
so this module computes them from the code: the import closure inside the package, read with
`ast` (nothing is imported or executed, so it is safe and fast on any checkout).

It is conservative: every import anywhere in a module counts (inside functions, under
`if TYPE_CHECKING`, in `try` blocks), because a module's lazy imports are still code the command
can run. Importing `tomrepro.a.b` counts `tomrepro/__init__.py` and `tomrepro/a/__init__.py`
too, as Python executes them. Besides `import` statements, a string constant that names a
package module (`"tomrepro.learning.model_learners"`, or `"module:attribute"` as the learner
registry's entry points) counts as an import, since it is there to be loaded by `importlib`.

Paths are repo-relative POSIX strings (e.g. "tomrepro/core/config.py"), as DVC writes deps.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

PACKAGE = "tomrepro"
CLI_MODULE = f"{PACKAGE}.cli"
# click >= 8.2 drops these suffixes from a function name when a command is given no name.
_CLICK_SUFFIXES = ("command", "cmd", "group", "grp")
# cli.py's functions that run for every command besides the command itself.
_ENTRY_POINTS = ("main", "run")


_MODULE_STRING = re.compile(rf"^{PACKAGE}(\.\w+)+(:\w+)?$")


class UnknownCommandError(KeyError):
    """The command name is not a `@cli.command` of cli.py."""


def module_file(module: str, root: Path) -> Path | None:
    """The source file of a `tomrepro.*` module (a package's `__init__.py`), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) `from ... import` names."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imported_modules(nodes: Iterable[ast.AST], module: str, is_package: bool) -> Iterator[str]:
    """Every module named by an import statement in `nodes` (their whole subtrees).

    `from pkg import name` yields `pkg` and `pkg.name`; the caller keeps `pkg.name` only when it
    is a module (a submodule imported by name), since it may just be an attribute of `pkg`.
    """
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node, module, is_package)
                yield source
                yield from (f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _MODULE_STRING.match(node.value)
            ):
                yield node.value.partition(":")[0]  # an entry point loaded by importlib


def _with_parents(module: str) -> Iterator[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`: importing a module runs its packages' `__init__` first."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _files_of(modules: Iterable[str], root: Path) -> set[Path]:
    files = set()
    for module in modules:
        for name in _with_parents(module):
            path = module_file(name, root)
            if path is not None:
                files.add(path)
    return files


def _relative(paths: Iterable[Path], root: Path) -> frozenset[str]:
    return frozenset(p.relative_to(root).as_posix() for p in paths)


def _closure_of_files(start: set[Path], root: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = _imported_modules([tree], _module_name(path, root), _is_package(path))
        todo.extend(_files_of(imported, root) - seen)
    return seen


def module_closure(modules: Iterable[str], root: Path) -> frozenset[str]:
    """Files of `modules` (dotted names) and of every `tomrepro` module they import, transitively.

    `root` is the directory holding the `tomrepro/` package (the repository root).
    """
    root = Path(root)
    return _relative(_closure_of_files(_files_of(modules, root), root), root)


# --- cli.py: one command's share of it -----------------------------------------------------------


def _decorator_call(decorator: ast.expr) -> tuple[str, ast.Call | None]:
    """`@a.b(...)` -> ("a.b", call); `@a.b` -> ("a.b", None)."""
    call = decorator if isinstance(decorator, ast.Call) else None
    target = call.func if call is not None else decorator
    return ast.unparse(target), call


def _click_name(function: ast.FunctionDef, call: ast.Call | None) -> str:
    """The name click gives a command: its first positional or `name=` string, else derived from
    the function name as click 8.2+ does (lowercase, `_` -> `-`, one suffix dropped)."""
    if call is not None:
        given = call.args[:1] + [k.value for k in call.keywords if k.arg == "name"]
        for arg in given:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value
    name = function.name.lower().replace("_", "-")
    left, sep, suffix = name.rpartition("-")
    return left if sep and suffix in _CLICK_SUFFIXES else name


def cli_commands(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """The `@<group>.command(...)` functions of cli.py by command name."""
    commands = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            target, call = _decorator_call(decorator)
            if target.endswith(".command"):
                commands[_click_name(node, call)] = node
    return commands


def _always_run(tree: ast.Module) -> list[ast.FunctionDef]:
    """The group callback, its result callbacks and the entry points: run for every command."""
    out = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        targets = [_decorator_call(d)[0] for d in node.decorator_list]
        group = any(
            t in ("click.group", "group") or t.endswith(".result_callback") for t in targets
        )
        if group or node.name in _ENTRY_POINTS:
            out.append(node)
    return out


def _reachable_functions(roots: Sequence[ast.AST], tree: ast.Module) -> list[ast.AST]:
    """`roots` and every module-level function or class of cli.py they refer to by name,
    transitively (e.g. a command calling a shared `_mbpo_profile` helper with its own imports)."""
    defined = {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    reached: list[ast.AST] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        reached.append(node)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id in defined:
                todo.append(defined[sub.id])
    return reached


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """cli.py's statements outside functions and classes (module-level imports run always)."""
    return [
        n
        for n in tree.body
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]


def command_names(root: Path) -> list[str]:
    """Every command name of cli.py, sorted."""
    return sorted(cli_commands(_cli_tree(Path(root))))


def _cli_file(root: Path) -> Path:
    path = module_file(CLI_MODULE, root)
    if path is None:
        raise FileNotFoundError(f"no {CLI_MODULE} under {root}")
    return path


def _cli_tree(root: Path) -> ast.Module:
    path = _cli_file(root)
    return ast.parse(path.read_text(), filename=str(path))


def command_closure(command: str, root: Path) -> frozenset[str]:
    """The files `tomrepro COMMAND` can run: cli.py, the imports of its module level, of the
    command's function, of the group callbacks (e.g. `--time-log`) and of the cli.py helpers
    they use, then everything those import inside the package."""
    root = Path(root)
    tree = _cli_tree(root)
    commands = cli_commands(tree)
    if command not in commands:
        raise UnknownCommandError(
            f"{command!r} is not a command of {CLI_MODULE} (known: {', '.join(sorted(commands))})"
        )
    roots: list[ast.AST] = [*_module_level(tree), commands[command], *_always_run(tree)]
    imported = _imported_modules(_reachable_functions(roots, tree), CLI_MODULE, False)
    cli_file = _cli_file(root)
    # cli.py's own imports are the ones chosen above, not all of them: start from the rest.
    start = _files_of(imported, root) - {cli_file}
    return _relative(_closure_of_files(start, root) | {cli_file}, root)


def code_digest(modules: Iterable[str], root: Path | None = None) -> str:
    """A digest of the code `modules` can run (their import closure), normalised so that
    comments, docstrings and formatting do not count: what a finished run's fingerprint
    records, so that a run is redone when its code changed and kept when it did not."""
    root = Path(__file__).resolve().parents[2] if root is None else Path(root)
    h = hashlib.sha256()
    for name in sorted(module_closure(modules, root)):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
        h.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()
