"""The shape of the code, checked from its source (issue 16): no import cycles, small modules,
short parameter lists.

Why from the AST and not by importing: an import cycle that only closes inside a function (a
"lazy" import) is still a cycle between two modules that each need the other, and it fails only
on the call path that closes it; reading every ``import`` statement, at module level and inside
functions (``if TYPE_CHECKING:`` blocks included: a type that lives in the wrong layer is a
layering cycle too), sees them all without running anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: package folders scanned, as (folder, dotted package name); pyproject's package-dir maps the
#: build-side stages into edgefer.* ([tool.setuptools.package-dir])
SCANNED = (("edgefer", "edgefer"), ("export", "edgefer.export"))
#: project modules an import may name without their folder being scanned (edges into them are
#: kept: they are leaves of this graph)
KNOWN = (*SCANNED, ("train", "edgefer.train"), ("calibration", "edgefer.calibration"))
MAX_LINES = 500
MAX_PARAMS = 12


def _modules(folders) -> dict[str, Path]:
    """dotted module name -> file, for every .py file under the given (folder, package) pairs."""
    out: dict[str, Path] = {}
    for folder, package in folders:
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"] if rel.name == "__init__" else list(rel.parts)
            name = ".".join([package, *parts])
            # a folder mapped on its own (edgefer/export is not a folder: export/ is) wins
            out.setdefault(name, path)
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest project module that ``name`` (dotted) starts with, or None (third party)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in known:
            return cand
    return None


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports anywhere in its source (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if _is_package(path) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                if sub in known:  # `from pkg import submodule`: the submodule
                    found.add(sub)
                    continue
                target = _resolve(origin, known)
                if target:
                    found.add(target)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports, for every module of the scanned folders."""
    known = _modules(KNOWN)
    scanned = _modules(SCANNED)
    return {m: _imports(m, p, known) for m, p in scanned.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_relative_lazy_and_mapped_imports():
    """The graph builder itself: a relative import, a function-level one and edgefer.export -> export/."""
    g = import_graph()
    assert "edgefer.artifact" in g["edgefer.classify"]  # `from .artifact import ...` at module level
    assert "edgefer.cli" in g["edgefer.ensemble"]  # `from .cli import main` inside main()
    assert "edgefer.backends.base" in g["edgefer.backends.onnxruntime"]  # `from .base import Backend`
    assert "edgefer.digests" in g["edgefer.artifact"]
    # export/ is scanned as edgefer.export.*, and its `from edgefer.x import ...` lines are edges
    exported = [m for m in g if m.startswith("edgefer.export.")]
    assert exported and any(t.startswith("edgefer.") and not t.startswith("edgefer.export")
                            for m in exported for t in g[m])
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules(SCANNED).values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _is_click_command(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with click (``@click.command``, ``@click.option``, ``@group.command()``, ...)."""
    for dec in fn.decorator_list:
        node = dec.func if isinstance(dec, ast.Call) else dec
        while isinstance(node, ast.Attribute):
            if node.attr in ("command", "group", "option", "argument", "pass_context"):
                return True
            node = node.value
        if isinstance(node, ast.Name) and node.id in ("click", "command", "option", "argument"):
            return True
    return False


def test_no_function_over_12_parameters():
    wide = []
    for path in _modules(SCANNED).values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_click_command(node):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                if a.args and a.args[0].arg in ("self", "cls"):
                    n -= 1
                if n > MAX_PARAMS:
                    wide.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    assert not wide, f"functions with more than {MAX_PARAMS} parameters besides *args/**kwargs: {wide}"
