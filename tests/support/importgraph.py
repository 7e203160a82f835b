"""The house rules of ekc's module tree, checked statically: layers, no import cycles, modules of a readable size.

``make lint`` runs ``python -m tests.support.importgraph``; ``tests/unit/test_import_graph.py`` runs the same
check and proves that it catches a cycle and a layer broken on purpose.

Every import counts, also those inside functions: a lazy import that only hides a cycle is still a cycle.
The layers follow the pipeline; a package may import its own modules and those of lower layers only:

    schemas, ekc (paths, version) < crypto < spec < render < bundle < engines < verify < lab < cli

so the lab (a test and demo harness) is imported by the CLI and the tests only, and nothing imports the CLI.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ekc", "schemas")
LAYERS = ("schemas", "ekc", "ekc.crypto", "ekc.spec", "ekc.render", "ekc.bundle", "ekc.engines", "ekc.verify",
          "ekc.lab", "ekc.cli")
MAX_LINES = 400
# Modules allowed past MAX_LINES, each with its reason.
LONG_MODULES: dict[str, str] = {
    "ekc.spec.yamlpos": "one YAML composer that records positions; its parts share the composer's state",
    "ekc.spec.diagnostics": "a table of pydantic error types and their plain-language messages, read as one",
}


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``line``."""

    importer: str
    imported: str
    line: int


def module_name(path: Path, root: Path) -> str:
    """``ekc/render/region.py`` -> ``ekc.render.region``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every Python module of the packages under ``root``, by dotted name."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imports_of(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[Edge]:
    """The project modules ``name`` imports, wherever in the file the import stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for dotted in targets:
            target = dotted
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield Edge(name, target, node.lineno)


def layer_of(name: str) -> int:
    """The index of the deepest layer that holds ``name``."""
    best = -1
    for index, layer in enumerate(LAYERS):
        if name == layer or name.startswith(layer + "."):
            best = index if best < 0 or len(layer) > len(LAYERS[best]) else best
    return best


def layer_problems(edges: Iterable[Edge], paths: Mapping[str, Path], root: Path) -> list[str]:
    """Imports that reach up the pipeline (into a later layer)."""
    problems = []
    for edge in edges:
        if layer_of(edge.imported) > layer_of(edge.importer):
            where = paths[edge.importer].relative_to(root)
            problems.append(f"{where}:{edge.line}: {edge.importer} imports {edge.imported}, a later layer "
                            f"({LAYERS[layer_of(edge.imported)]} comes after {LAYERS[layer_of(edge.importer)]})")
    return problems


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted, sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep chain of imports cannot exhaust Python's recursion limit.
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(groups)


def size_problems(paths: Mapping[str, Path], root: Path) -> list[str]:
    """Modules over MAX_LINES lines that have no written reason; reasons for modules that shrank."""
    problems = []
    for name, path in sorted(paths.items()):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and name not in LONG_MODULES:
            problems.append(f"{path.relative_to(root)}: {lines} lines (over {MAX_LINES}): split it, or give the "
                            "reason in LONG_MODULES")
        elif lines <= MAX_LINES and name in LONG_MODULES:
            problems.append(f"{path.relative_to(root)}: {lines} lines: drop its LONG_MODULES entry")
    return problems


def check(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> list[str]:
    """Every problem of the tree under ``root``, one line each (empty when the tree keeps the rules)."""
    paths = modules(root, packages)
    edges = [edge for name, path in paths.items() for edge in imports_of(name, path, paths)]
    problems = layer_problems(edges, paths, root)
    problems += [f"import cycle: {' <-> '.join(group)}" for group in cycles(edges)]
    return problems + size_problems(paths, root)


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    paths = modules(REPO)
    print(f"import graph: {len(paths)} modules, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
