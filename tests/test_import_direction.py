"""Imports point one way: ``regprune.cli -> flows -> tasks -> library`` (ARCHITECTURE.md), and no
module imports itself back. Read from the source with :mod:`ast`, so an import inside a function
counts as much as one at the top: a cycle hidden in a function is still a cycle, it only fails
later (and a wrong direction is wrong wherever it is written). And ``tasks/`` holds Prefect
tasks and their glue, not the library: a module there with much code outside its tasks fails."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
FOLDERS = {"regprune": "regprune", "flows": "regprune.flows", "tasks": "regprune.tasks"}
FOLDERS["sql"] = "regprune.sql"  # installed under one namespace (pyproject.toml package-dir)

ALLOWED: dict[tuple[str, str], str] = {}
"""(importer, imported) edges the rules would refuse, each with why it stays. Empty: keep it so."""


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {self.imported}"


def project_modules() -> dict[str, Path]:
    """Every module of the project by its installed name."""
    modules: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((TOP / folder).rglob("*.py")):
            parts = list(path.relative_to(TOP / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` is or lies in (``regprune.x.f`` for a function ``f``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(modules: dict[str, Path]) -> list[Edge]:
    """Each project import of each module, at any depth of its code (parent packages a dotted
    import also runs are left out: a submodule importing its siblings is no cycle)."""
    edges: dict[tuple[str, str, int], Edge] = {}
    for importer, path in modules.items():
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from package import submodule` imports the submodule
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                imported = _resolve(target, modules)
                if imported and imported != importer:
                    file = str(path.relative_to(TOP))
                    edges[importer, imported, node.lineno] = Edge(
                        importer, imported, file, node.lineno
                    )
    return list(edges.values())


def layer(module: str) -> str:
    for name in ("cli", "flows", "tasks"):
        if module == f"regprune.{name}" or module.startswith(f"regprune.{name}."):
            return name
    return "library"


ORDER = {"cli": 3, "flows": 2, "tasks": 1, "library": 0}


def wrong_direction(edges: list[Edge]) -> list[Edge]:
    """An import from a layer to one above it: cli -> flows -> tasks -> library only."""
    return [
        edge
        for edge in edges
        if ORDER[layer(edge.importer)] < ORDER[layer(edge.imported)]
        and (edge.importer, edge.imported) not in ALLOWED
    ]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if (edge.importer, edge.imported) not in ALLOWED:
            graph.setdefault(edge.importer, set()).add(edge.imported)
            graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_project() -> None:
    """The checker itself sees the layers' real imports (else every rule would pass vacuously)."""
    edges = import_edges(project_modules())
    seen = {(layer(e.importer), layer(e.imported)) for e in edges}
    assert {("cli", "flows"), ("flows", "tasks"), ("tasks", "library")} <= seen


def test_checker_finds_a_cycle_and_a_wrong_direction() -> None:
    made_up = [
        Edge("regprune.a", "regprune.b", "regprune/a.py", 3),
        Edge("regprune.b", "regprune.a", "regprune/b.py", 7),
        Edge("regprune.tasks.t", "regprune.flows.f", "tasks/t.py", 9),
    ]
    assert cycles(made_up) == [["regprune.a", "regprune.b"]]
    assert [str(e) for e in wrong_direction(made_up)] == [
        "tasks/t.py:9: regprune.tasks.t imports regprune.flows.f"
    ]


def test_imports_point_one_way() -> None:
    wrong = wrong_direction(import_edges(project_modules()))
    assert not wrong, "imports against cli -> flows -> tasks -> library:\n" + "\n".join(
        map(str, wrong)
    )


def test_no_import_cycles() -> None:
    edges = import_edges(project_modules())
    report = []
    for component in cycles(edges):
        members = set(component)
        report.append(" <-> ".join(component))
        report += [
            f"  {edge}" for edge in edges if edge.importer in members and edge.imported in members
        ]
    assert not report, "import cycles:\n" + "\n".join(report)


# --- tasks/ holds tasks ----------------------------------------------------------------------

TASK_MODULE_OTHER_LINES = 100
"""The most lines a ``tasks/`` module may hold outside its Prefect tasks (helpers, classes,
constants): past that, the code is library and belongs under ``regprune/``, its task a wrapper."""
LARGER_TASK_MODULES: dict[str, str] = {}
"""tasks/ modules over the budget, each with why it stays; a module back under it must leave.
Empty: keep it so."""


def _is_task(node: ast.stmt) -> bool:
    """A function decorated with Prefect's ``@task`` or ``@task(...)``."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
        if name == "task":
            return True
    return False


def other_lines(source: str) -> int:
    """Lines of a module's top-level statements but its docstring, its imports and its
    ``@task`` functions (decorators included)."""
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    lines = 0
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom) or _is_task(node):
            continue
        decorators = getattr(node, "decorator_list", [])
        start = min([node.lineno, *(d.lineno for d in decorators)])
        lines += (node.end_lineno or node.lineno) - start + 1
    return lines


def test_other_lines_counts_what_is_not_a_task() -> None:
    source = '''"""doc"""
import json
from prefect import task

LIMIT = 3


@task(name="a")
def a() -> int:
    return helper()


@task
def b() -> None:
    pass


def helper() -> int:
    return json.loads("1")
'''
    assert other_lines(source) == 1 + 2


def test_tasks_modules_hold_tasks() -> None:
    sizes = {
        path.name: other_lines(path.read_text()) for path in sorted((TOP / "tasks").glob("*.py"))
    }
    large = {
        f"tasks/{name}: {lines} lines outside its tasks"
        for name, lines in sizes.items()
        if lines > TASK_MODULE_OTHER_LINES and name not in LARGER_TASK_MODULES
    }
    assert not large, (
        f"library code in tasks/ (more than {TASK_MODULE_OTHER_LINES} lines outside @task): "
        "move it under regprune/ and keep the task a wrapper:\n" + "\n".join(sorted(large))
    )
    back = [name for name in LARGER_TASK_MODULES if sizes.get(name, 0) <= TASK_MODULE_OTHER_LINES]
    assert not back, f"within the budget now, take them out of LARGER_TASK_MODULES: {back}"
