"""The package's shape, read from its source (AST only: nothing is imported, no host needed).

- No import cycle between deployer modules. Every import counts (at module level or inside a
  function, `from deployer.x import y`, and the package `__init__` that importing a submodule runs)
  except type-only ones under `if TYPE_CHECKING:`.
- Imports point down the layers: a module imports only from its own layer or one before it in
  LAYERS (type-only imports excepted). benchmarks/ and tests/ are outside the package.
- Only report/output.py prints: no `print` and no `sys.stdout` / `sys.stderr` write elsewhere in
  deployer/, but for the few places named in PRINTS with their reason.

Each failure names the file and line of the offending import or print.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "deployer"
RECIPES = REPO / "recipes"  # installed as deployer.recipes: data and hooks, importing no deployer module

# The import order, bottom first: a module may import from its own layer and the ones before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("deployer", "deployer.errors", "deployer.redact", "deployer.recipes"),
    ("deployer.config",),
    ("deployer.plan",),
    ("deployer.artifact",),
    ("deployer.remote",),
    ("deployer.ssh",),
    ("deployer.report",),
    ("deployer.engine",),
    ("deployer.sandbox",),
    ("deployer.cli", "deployer.__main__"),
)

# Arrows the structure work in progress removes (importer, imported): each breaks a cycle or runs
# up the layers today. An entry no longer found fails the test, so that it is deleted here.
KNOWN: set[tuple[str, str]] = set()

# Files that may print, and why. Paths relative to deployer/; a folder covers what is inside.
PRINTS = {
    "report/output.py": "the printer",
    "remote/scripts/": "programs run by python3 on the hosts, whose output the client reads",
    "sandbox/sample_app/": "the app deployed to sandbox hosts",
    "ssh/agent_server.py": "the connection agent, a process of its own: its stderr is its log file",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    where: str  # file:line
    type_only: bool
    implied: bool = False  # the package __init__ that importing a submodule runs


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (recipes/ as deployer.recipes)."""
    out = {}
    for root, name in ((PACKAGE, "deployer"), (RECIPES, "deployer.recipes")):
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([name, *parts])] = path
    return out


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST, type_only: bool = False):
    """(import statement, type_only) for every import in the tree, at any depth."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _type_checking(node.test):
            for child in node.body:
                yield from _statements(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _statements(ast.Module(body=[child], type_ignores=[]), type_only)
        else:
            yield from _statements(node, type_only)


def imports(known: dict[str, Path]) -> list[Import]:
    """Every import of a deployer module by a deployer module, with the package __init__ files
    importing a submodule runs (but a package's own modules, which run inside it)."""
    out = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name if is_package(path) else name.rpartition(".")[0]
        where_file = path.relative_to(REPO)
        for node, type_only in _statements(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).rstrip(".")
                for alias in node.names:
                    targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
            for target in targets:
                if not (target == "deployer" or target.startswith("deployer.")):
                    continue
                while target not in known:  # `import deployer.x.name`: the module that holds it
                    target = target.rpartition(".")[0]
                parents = target.split(".")
                for i in range(1, len(parents) + 1):
                    imported = ".".join(parents[:i])
                    inside = name == imported or name.startswith(imported + ".")
                    if imported == target or (not inside and imported in known):
                        where = f"{where_file}:{node.lineno}"
                        out.append(Import(name, imported, where, type_only, implied=imported != target))
    return out


def layer(name: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(name == n or name.startswith(n + ".") for n in names if n != "deployer") or name in names:
            return i
    raise AssertionError(f"{name} belongs to no layer: add it to LAYERS in tests/test_layers.py")


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.importer != e.imported:
            graph.setdefault(e.importer, set()).add(e.imported)
            graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

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
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _edges() -> list[Import]:
    return [e for e in imports(modules()) if not e.type_only]


def shortest_cycle(start: str, edges: list[Import]) -> list[Import]:
    """The fewest imports leading from start back to it (breadth first)."""
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    for here in queue:
        for e in sorted((e for e in edges if e.importer == here), key=lambda e: e.imported):
            if e.imported == start:
                return [*paths[here], e]
            if e.imported not in paths:
                paths[e.imported] = [*paths[here], e]
                queue.append(e.imported)
    return []


def test_no_import_cycle():
    edges = [e for e in _edges() if (e.importer, e.imported) not in KNOWN]
    problems = []
    for group in cycles(edges):
        hops = "\n    ".join(f"{e.where}: {e.importer} imports {e.imported}" for e in shortest_cycle(group[0], edges))
        problems.append(f"import cycle among {len(group)} modules ({', '.join(group)}), for one:\n    {hops}")
    assert not problems, "\n".join(problems)


def test_imports_point_down_the_layers():
    upward = [
        f"{e.where}: {e.importer} ({LAYERS[layer(e.importer)][0]}) imports {e.imported} "
        f"({LAYERS[layer(e.imported)][0]}), a later layer"
        for e in _edges()
        if not e.implied and layer(e.imported) > layer(e.importer) and (e.importer, e.imported) not in KNOWN
    ]
    assert not upward, "imports running up the layers:\n" + "\n".join(sorted(set(upward)))


def test_known_exceptions_are_still_there():
    """KNOWN lists only arrows that exist: one removed is deleted from the list."""
    found = {(e.importer, e.imported) for e in _edges()}
    stale = sorted(KNOWN - found)
    assert not stale, "no longer imported, delete from KNOWN in tests/test_layers.py: " + repr(stale)


def printing(tree: ast.AST) -> list[int]:
    """Lines that print: the name `print` (called or passed on), or sys.stdout / sys.stderr
    (or their buffers) written to."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "print":
            lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr in ("write", "writelines"):
            target = ast.unparse(node.value)
            if target.startswith(("sys.stdout", "sys.stderr", "sys.__stdout__", "sys.__stderr__")):
                lines.append(node.lineno)
    return lines


def test_only_report_output_prints():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in PRINTS):
            continue
        text = path.read_text()
        for line in printing(ast.parse(text, str(path))):
            found.append(f"deployer/{rel}:{line}: {text.splitlines()[line - 1].strip()}")
    assert not found, "printing outside report/output.py (print there, or name the file in PRINTS):\n" + "\n".join(
        found
    )


def test_the_checks_see_what_they_look_for():
    """The readers themselves: a relative import, a type-only one, a submodule's package."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nimport sys\nif TYPE_CHECKING:\n    from . import x\n"
        "def f():\n    print('a')\n    sys.stderr.write('b')\n    sys.stdout.buffer.write(b'c')\n"
    )
    assert [(type(n).__name__, t) for n, t in _statements(tree)] == [
        ("ImportFrom", False),
        ("Import", False),
        ("ImportFrom", True),
    ]
    assert printing(tree) == [6, 7, 8]
    loop = [Import("a", "b", "", False), Import("b", "a", "", False), Import("b", "c", "", False)]
    assert cycles(loop) == [["a", "b"]] and shortest_cycle("a", loop) == loop[:2]
    found = {(e.importer, e.imported) for e in imports(modules())}
    assert ("deployer.engine.backend", "deployer.ssh") in found  # the package __init__ runs too
    assert ("deployer.ssh.types", "deployer.ssh") not in found  # ... but not for its own modules


def test_no_module_over_450_lines():
    """Small modules with one job: a module past 450 lines is split, not grown."""
    root = Path(__file__).resolve().parent.parent
    long = [
        f"{p.relative_to(root)}: {n} lines"
        for p in sorted([*(root / "deployer").rglob("*.py"), *(root / "recipes").rglob("*.py")])
        if (n := len(p.read_text().splitlines())) > 450
    ]
    assert not long, "\n".join(long)
