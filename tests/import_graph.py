"""beamcap's import graph, read from the source (``ast``), not by importing it: an edge for every
``import`` of one of its modules, at module level or inside a function. An import names the
deepest module it reaches (``from models.captioner import bundle`` -> ``models.captioner.bundle``;
``from models.captioner.bundle import Bundle`` -> ``models.captioner.bundle``); the packages it
passes through are not edges.

    python -m tests.import_graph    # every module's imports, then the cycles (exit 1 if any)
"""

from __future__ import annotations

import ast
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("models", "transforms", "pipeline")

Graph = dict[str, dict[str, int]]  # module -> {module it imports: the line of the first import}


def modules(root: Path, layers=LAYERS) -> dict[str, Path]:
    """{dotted name: file} of every module under the ``layers`` folders of ``root``."""
    found = {}
    for layer in layers:
        for path in sorted((root / layer).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _named(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement reaches, most specific first per name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package, up level - 1 more
        package = module.split(".")[: len(module.split(".")) - (not is_package)]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{alias.name}" for alias in node.names] or [base]


def _deepest(name: str, known: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def graph(root: Path = ROOT, layers=LAYERS) -> Graph:
    """Each module's imports of the others, with the line of the first."""
    known = modules(root, layers)
    edges: Graph = {}
    for module, path in known.items():
        edges[module] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            for name in _named(node, module, path.name == "__init__.py"):
                target = _deepest(name, known)
                if target and target != module:
                    edges[module].setdefault(target, node.lineno)
    return edges


def cycles(edges: Graph) -> list[list[str]]:
    """The shortest cycle through each module that is in one, as a path that ends where it
    begins (``[a, b, a]``), each cycle once; none when the graph is acyclic."""
    found, seen = [], set()
    for start in sorted(edges):
        group = _reachable(edges, start) & _reaching(edges, start)
        if len(group) > 1:
            cycle = _shortest_cycle(edges, start, group)
            turned = min(tuple(cycle[i:-1] + cycle[:i]) for i in range(len(cycle) - 1))
            if turned not in seen:
                seen.add(turned)
                found.append(cycle)
    return found


def _reachable(edges: Graph, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _reaching(edges: Graph, start: str) -> set[str]:
    reverse: Graph = {}
    for source, targets in edges.items():
        for target in targets:
            reverse.setdefault(target, {})[source] = 0
    return _reachable(reverse, start)


def _shortest_cycle(edges: Graph, start: str, group: set[str]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``group`` (breadth first)."""
    paths, seen = [[start]], set()
    while paths:
        path = paths.pop(0)
        for target in sorted(edges[path[-1]]):
            if target == start:
                return [*path, start]
            if target in group and target not in seen:
                seen.add(target)
                paths.append([*path, target])
    raise AssertionError(f"{start} is in no cycle")


def in_words(cycle: list[str], edges: Graph) -> str:
    """``a -> b (a:12) -> a (b:3)``: each step with the line of its import."""
    steps = [f"{b} ({a}:{edges[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([cycle[0], *steps])


def main() -> int:
    edges = graph()
    for module, targets in sorted(edges.items()):
        print(f"{module} -> {', '.join(sorted(targets)) or '(none)'}")
    found = cycles(edges)
    print(f"\n{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(found)} cycles")
    for cycle in found:
        print("cycle:", in_words(cycle, edges))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
