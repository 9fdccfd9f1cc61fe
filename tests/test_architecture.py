"""The folder tree is the architecture: these tests keep its import rules true.

- ``cityscale/`` is the library: it imports nothing from its callers (``pipelines/``, ``components/``,
  ``serving/``), not even inside a function; their CLI commands plug in through an entry point instead.
- No import cycle between the library's modules, counting imports inside functions too (a lazy import
  hides a cycle, it does not remove it).
- Every KFP component calls exactly one function of ``cityscale.steps``, and ``steps`` holds nothing else
  public than what a component calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "cityscale"
CALLERS = ("pipelines", "components", "serving")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its body; ``from a import b`` yields ``a.b`` when b is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _library_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in LIBRARY.rglob("*.py")}


def test_the_library_imports_none_of_its_callers() -> None:
    offenders = {
        name: sorted(m for m in _imports(path) if m.split(".")[0] in CALLERS)
        for name, path in _library_modules().items()
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"cityscale/ must not import {CALLERS}: {offenders}"


def test_no_import_cycle_in_the_library() -> None:
    modules = _library_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, m) for m in _imports(path) if m in modules and m != name)
    cycles = list(nx.simple_cycles(graph, length_bound=6))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The AST walk finds imports nested in functions (what both rules rely on)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from serving.client import infer_rest\n    import pipelines.compile\n")
    assert {"serving.client", "serving.client.infer_rest", "pipelines.compile"} <= _imports(probe)


def _steps_calls(path: Path) -> set[str]:
    return {
        node.func.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "steps"
    }


@pytest.mark.parametrize(
    "component", sorted(p.name for p in (ROOT / "components").glob("*.py") if p.stem != "__init__")
)
def test_each_component_is_a_thin_wrapper_over_one_step(component: str) -> None:
    calls = _steps_calls(ROOT / "components" / component)
    # deploy's "kserve" target rolls out through serving/ (a layer above the library): steps.deploy_local + that.
    assert len(calls) == 1 or calls <= {"evaluate", "write_evaluation"}, f"{component} calls steps.{sorted(calls)}"


def test_steps_holds_only_what_components_call() -> None:
    called = set().union(*(_steps_calls(p) for p in (ROOT / "components").glob("*.py")))
    tree = ast.parse((LIBRARY / "steps.py").read_text())
    public = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    assert public == called, f"uncalled: {sorted(public - called)}, missing: {sorted(called - public)}"


def test_every_library_folder_is_a_package() -> None:
    """setuptools' find_packages (pyproject) ships only folders with an ``__init__.py``; the image needs them all."""
    missing = [str(d.relative_to(ROOT)) for d in LIBRARY.rglob("*") if d.is_dir() and any(d.glob("*.py"))]
    missing = [d for d in missing if not (ROOT / d / "__init__.py").exists()]
    assert not missing, f"folders without __init__.py (left out of a non-editable install): {missing}"
