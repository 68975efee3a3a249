"""The import graph of ``scheduler/`` has no cycle, counting imports made only for type
checking too (helpers type against small Protocols instead); and the modules' old names
keep working."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scheduler"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import statement, anywhere)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for alias in node.names:  # `from . import x`: the submodule x, if it is one
                    sub = f"{origin}.{alias.name}"
                    targets.append(sub if sub in modules else origin)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scheduler_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "scheduler.seats" in graph["scheduler.scheduler"]  # the graph is read at all
    found = cycles(graph)
    detail = "; ".join(
        " -> ".join(f"{m} (imports {sorted(graph[m] & set(c))})" for m in c) for c in found
    )
    assert found == [], f"import cycles: {detail}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("scheduler.health", "scheduler.gate", ["HealthGate", "GateStats"]),
        ("scheduler.upstream_health", "scheduler.upstream", ["Upstream", "UpstreamHealth"]),
        ("scheduler.upstream", "scheduler.classify", ["RetryableError", "classify"]),
    ],
)
def test_the_old_module_names_still_import(old: str, new: str, names: list[str]) -> None:
    before, now = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(before, name) is getattr(now, name)


def test_every_exception_class_of_the_package_is_in_errors() -> None:
    import pkgutil

    import scheduler

    found: dict[str, str] = {}
    for info in pkgutil.walk_packages(scheduler.__path__, "scheduler."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("scheduler")
            ):
                found[value.__qualname__] = value.__module__
    assert len(found) >= 15  # the walk saw the tree
    assert {name: where for name, where in found.items() if where != "scheduler.errors"} == {}
