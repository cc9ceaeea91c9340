"""What the container image relies on, checked without building it: every
numba kernel caches its machine code (so the image's build-time render
leaves containers warm), and every path the Dockerfile copies is in the
build context that .dockerignore lets through."""

from __future__ import annotations

import ast
import fnmatch

from conftest import REPO_ROOT


def _njit_calls(tree: ast.AST):
    """(line, keyword names) of every ``numba.njit(...)``/``njit(...)`` decorator."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            func = call.func if call else decorator
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("njit", "jit"):
                keywords = {k.arg: k.value for k in call.keywords} if call else {}
                yield node.lineno, keywords


def test_every_builder_kernel_caches_its_machine_code():
    kernels, uncached = 0, []
    for path in sorted((REPO_ROOT / "builder").rglob("*.py")):
        for line, keywords in _njit_calls(ast.parse(path.read_text())):
            kernels += 1
            cache = keywords.get("cache")
            if not (isinstance(cache, ast.Constant) and cache.value is True):
                uncached.append(f"{path.relative_to(REPO_ROOT)}:{line}")
    assert kernels > 0, "no numba kernels found: the scan is broken"
    assert not uncached, f"kernels without cache=True (containers would compile them at every start): {uncached}"


def _dockerignore_allows(path: str, rules: list[str]) -> bool:
    """Whether the Docker build context includes ``path`` (a top-level
    file or folder name) under .dockerignore's rules: the last matching rule
    wins, "!" re-includes."""
    allowed = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        if fnmatch.fnmatch(path, pattern):
            allowed = negated
    return allowed


def test_dockerfile_copies_only_what_the_build_context_holds():
    rules = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    sources = []
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
    assert sources, "no COPY found in the Dockerfile: the scan is broken"
    excluded = [s for s in sources if not _dockerignore_allows(s.rstrip("/"), rules)]
    assert not excluded, f".dockerignore leaves these COPY sources out of the build context: {excluded}"
    missing = [s for s in sources if not (REPO_ROOT / s).exists()]
    assert not missing, f"the Dockerfile copies paths that do not exist: {missing}"
    assert not _dockerignore_allows(".venv", rules) and not _dockerignore_allows(".git", rules)


def test_pyproject_lists_every_package_of_both_folders():
    import tomllib

    setup = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setup["package-dir"].items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO_ROOT / folder).parts
            found.add(".".join((package, *parts)))
    listed = set(setup["packages"])
    assert "fracbuild.generators.contour" in found, "the scan is broken"
    assert found <= listed, f"missing from pyproject's packages (a wheel would lack them): {sorted(found - listed)}"
