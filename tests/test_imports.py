"""core/ has no import cycle and never imports streamlit: every module's imports (top-level and inside
functions) read with ast, as a graph of core modules."""

from __future__ import annotations

import ast
from pathlib import Path

from core.cli import build_parser
from tests.conftest import ROOT

CORE = ROOT / "core"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file names (relative ones made absolute)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    return names_in(path.read_text(encoding="utf-8"), package)


def names_in(source: str, package: str) -> set[str]:
    """The module names imported anywhere in `source`, a module of `package`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x` names a module
    return names


def core_graph() -> dict[str, set[str]]:
    """core module -> the core modules it imports (a package's `__init__` counts as the package)."""
    files = {module_name(p): p for p in sorted(CORE.rglob("*.py"))}
    return {mod: {n for n in imported_names(path) if n in files and n != mod} for mod, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_function_local_and_relative_imports():
    src = "from . import a\nfrom .b import c\n\ndef f():\n    from ..d import e\n    import core.x\n"
    names = names_in(src, "core.cli")
    assert {"core.cli.a", "core.cli.b", "core.d", "core.x"} <= names
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_has_no_import_cycle():
    graph = core_graph()
    assert "core.llm" in graph and len(graph) > 20  # the walk found the modules
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in core/: " + " -> ".join(cycle)


def test_core_never_imports_streamlit():
    users = sorted(module_name(p) for p in CORE.rglob("*.py")
                   if any(n == "streamlit" or n.startswith("streamlit.") for n in imported_names(p)))
    assert users == [], f"core/ must not import streamlit: {users}"


def test_the_cli_imports_at_the_top_and_swallows_no_import_error():
    """A subcommand cannot vanish: core/cli imports every module at its top and catches no ImportError."""
    local, swallowed = [], []
    for path in sorted((CORE / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            local += [f"{path.name}:{n.lineno}" for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for handler in (n for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler)):
            caught = ast.unparse(handler.type) if handler.type is not None else "everything"
            if any(name in caught for name in ("ImportError", "ModuleNotFoundError", "everything")):
                swallowed.append(f"{path.name}:{handler.lineno} except {caught}")
    assert local == [] and swallowed == [], (local, swallowed)
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    assert set(sub.choices) == {"tasks", "evaluate", "optimize", "resume", "export", "import", "replay", "blame",
                                "revert", "exclude", "lock", "new", "step", "continue", "feedback", "gradient",
                                "decide", "validate", "confirm", "study", "demo"}
