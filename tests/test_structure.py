"""The package layering the README's architecture section promises, read from the source.

Imports point one way: model_core <- model_compile, serve, deploy; serve and model_compile
<- bench. No module imports another that (directly or not) imports it back, and every
package says its one job in its docstring.
"""
from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("model_core", "model_compile", "serve", "bench", "deploy", "sample_models")
# Which project packages each package may import (itself always).
ALLOWED = {
    "model_core": set(),
    "model_compile": {"model_core"},
    "serve": {"model_core"},
    # deploy reads the benchmark's capacity arithmetic and price table (bench.capacity, which
    # imports nothing of ours) for cost figures beside AWS's; bench never imports deploy.
    "deploy": {"model_core", "bench.capacity"},
    "sample_models": set(),
    "bench": {"model_core", "model_compile", "serve", "sample_models"},
}


def _module_imports() -> dict[str, set[str]]:
    """``{module: project modules it imports}``, e.g. ``serve.loading -> {model_core.artifact}``,
    imports inside functions included (a lazy import is still a dependency)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
            graph[name] = {m for m in found if m.split(".")[0] in PACKAGES and m != name}
    modules = set(graph)
    # "from serve import codecs" names the module serve.codecs; keep only real modules.
    return {name: {m for m in deps if m in modules} for name, deps in graph.items()}


def test_packages_import_only_what_the_layering_allows():
    wrong = sorted(f"{module} imports {dep}" for module, deps in _module_imports().items()
                   for dep in deps
                   if dep.split(".")[0] != module.split(".")[0]
                   and dep.split(".")[0] not in ALLOWED[module.split(".")[0]]
                   and dep not in ALLOWED[module.split(".")[0]])
    assert wrong == []


def test_no_module_imports_itself_back():
    graph = _module_imports()
    cycles = []

    def visit(start: str, module: str, path: list[str], seen: set[str]) -> None:
        for dep in graph.get(module, ()):
            if dep == start:
                cycles.append(" -> ".join(path + [dep]))
            elif dep not in seen:
                seen.add(dep)
                visit(start, dep, path + [dep], seen)

    for module in graph:
        # A package's __init__ that lazily re-exports a submodule is not a circle of modules.
        if "." in module:
            visit(module, module, [module], set())
    cycles = [c for c in cycles if all("." in part for part in c.split(" -> "))]
    assert cycles == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_its_job(package):
    doc = ast.get_docstring(ast.parse((REPO_ROOT / package / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 5
