"""The trainer's import graph, read from its source: no module imports
another's ``_private`` name (a name used across files is public), and no
import cycle (TYPE_CHECKING imports count: they are edges a reader follows)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE, FOLDER = "fractrain", REPO_ROOT / "trainer"
# The modules behind fractrain's commands: they share start-up through
# run.py (and the downstream job through downstream_run.py), never each other.
COMMANDS = ("pretrain", "finetune", "probe", "bench", "experiment")


def _modules(package: str = PACKAGE, folder: Path = FOLDER) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The module an ``ImportFrom`` in ``module`` (at ``path``) names, made absolute."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, modules: dict[str, Path]):
    """(line, imported module, imported name or None) of every import in ``module``;
    ``from pkg import sub`` names the submodule ``pkg.sub`` when it is one."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, path, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield (node.lineno, sub, None) if sub in modules else (node.lineno, source, alias.name)


def _private_imports(modules: dict[str, Path], root: Path = REPO_ROOT) -> list[str]:
    found = []
    for module, path in modules.items():
        for line, source, name in _imports(module, path, modules):
            if source != module and name and name.startswith("_") and not name.startswith("__"):
                found.append(f"{path.relative_to(root)}:{line} imports {name} from {source}")
    return found


def _command_imports(modules: dict[str, Path], commands: tuple[str, ...] = COMMANDS, package: str = PACKAGE,
                     root: Path = REPO_ROOT) -> list[str]:
    """Every import, at any depth of a command module (function bodies
    included), of another command module or of a name from one."""
    names = {f"{package}.{command}" for command in commands}
    found = []
    for module in sorted(names & modules.keys()):
        path = modules[module]
        for line, source, _ in _imports(module, path, modules):
            if source in names and source != module:
                found.append(f"{path.relative_to(root)}:{line} imports {source}")
    return found


def _cycle(modules: dict[str, Path]) -> list[str] | None:
    """One import cycle among ``modules`` (as the list of modules along it), or None."""
    edges = {m: sorted({s for _, s, _ in _imports(m, p, modules) if s in modules and s != m})
             for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in edges[node]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in edges:
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_trainer_module_imports_another_modules_private_name():
    modules = _modules()
    assert "fractrain.gpu_augment.static" in modules, "the scan is broken"
    found = _private_imports(modules)
    assert not found, "private names imported across modules (make them public):\n" + "\n".join(found)


def test_the_trainer_has_no_import_cycle():
    modules = _modules()
    cycle = _cycle(modules)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_command_module_imports_another():
    modules = _modules()
    assert {f"{PACKAGE}.{command}" for command in COMMANDS} <= modules.keys(), "a command module was renamed"
    found = _command_imports(modules)
    assert not found, "command modules import each other (share through run.py instead):\n" + "\n".join(found)


def test_the_command_scan_sees_a_command_importing_another(tmp_path):
    # A name imported at the top, a module imported inside a function, and
    # an absolute import; an import of a shared module is allowed.
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "run.py").write_text("def check(): pass\n")
    (tmp_path / "a.py").write_text("from .b import helper\nfrom .run import check\n")
    (tmp_path / "b.py").write_text("def helper():\n    from . import c\n")
    (tmp_path / "c.py").write_text("import toy.a\n")
    modules = _modules("toy", tmp_path)
    assert _command_imports(modules, ("a", "b", "c"), "toy", tmp_path) == [
        "a.py:1 imports toy.b", "b.py:2 imports toy.c", "c.py:1 imports toy.a"]


def test_the_scans_see_a_private_import_and_a_cycle(tmp_path):
    # The rules on a toy package: a relative private import, and a cycle
    # closed only by a TYPE_CHECKING import.
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .b import _helper\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
                                   "def _helper(): pass\n")
    modules = _modules("toy", tmp_path)
    assert _private_imports(modules, tmp_path) == ["a.py:1 imports _helper from toy.b"]
    assert _cycle(modules) in (["toy.a", "toy.b", "toy.a"], ["toy.b", "toy.a", "toy.b"])
