"""The layout of the code, checked: where things are and what may import what.

- ``__init__.py`` files hold a docstring only: what a package holds is in its modules, named for it.
- No import cycles between the repository's modules, counting imports inside functions too (only
  ``if TYPE_CHECKING:`` imports, which never run, are left out).
- Every control-plane module imports on its own, in a fresh interpreter.
- ``import definitions`` is cheap: it loads none of the control plane's modules nor the settings; Dagster
  builds the definitions when it loads them (``@dagster.definitions``).
- Only Dagster's public API: no ``dagster._...`` (or ``dagster_*._...``) import or module path, except in
  tests/dagster_daemons.py, which drives Dagster's daemons in process (see its docstring).
- Jobs select assets by the keys their asset modules define, never by restated literal keys.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The repository's own top-level packages and modules (pyproject's known-first-party).
FIRST_PARTY = ("iot_lake", "assets", "resources", "jobs", "sensors", "lib", "benchmarks", "tests", "definitions")
CONTROL_PLANE = ("assets", "resources", "jobs", "sensors", "lib", "definitions")
PUBLIC_API_CHECKED = (*CONTROL_PLANE, "benchmarks", "tests")
# The one module allowed Dagster's internals, and why: tests/dagster_daemons.py.
PRIVATE_API_ALLOWED = {"tests/dagster_daemons.py"}


def _files(*roots: str) -> list[Path]:
    out = []
    for root in roots:
        path = REPO / root
        out.extend([path.with_suffix(".py")] if path.with_suffix(".py").is_file() else sorted(path.rglob("*.py")))
    return [p for p in out if "__pycache__" not in p.parts]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(tree: ast.Module):
    """Every import statement that can run: at module level or in a function, not under ``if TYPE_CHECKING``."""

    def type_checking(node: ast.If) -> bool:
        test = node.test
        return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )

    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (a ``from package import module`` names the module)."""
    paths = {_module_name(p): p for p in _files(*FIRST_PARTY)}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            for target in targets:
                # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    if (prefix := ".".join(parts[:i])) in paths and prefix != name:
                        graph[name].add(prefix)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), as a path through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_init_files_hold_a_docstring_only():
    for path in _files(*FIRST_PARTY):
        if path.name != "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        extra = body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
        assert not extra, f"{path.relative_to(REPO)}: an __init__.py holds its package's docstring only"


def test_there_are_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_control_plane_module_imports_on_its_own():
    modules = sorted(_module_name(p) for p in _files(*CONTROL_PLANE))
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    out = subprocess.run([sys.executable, "-c", probe, *modules], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]


def test_importing_the_definitions_builds_nothing():
    probe = (
        "import sys, definitions\n"
        "from dagster import Definitions\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{CONTROL_PLANE!r} and '.' in m or m in ('iot_lake.settings', 'dagster_dbt'))\n"
        "print(loaded, isinstance(definitions.defs, Definitions), callable(definitions.defs))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip() == "[] False True"


_PRIVATE = re.compile(r"\bdagster(?:_[a-z]+)?\._\w*")


def test_only_public_dagster_api():
    offences = []
    for path in _files(*PUBLIC_API_CHECKED):
        rel = path.relative_to(REPO).as_posix()
        if rel in PRIVATE_API_ALLOWED or path == Path(__file__).resolve():
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = _PRIVATE.findall(node.value)  # module paths in strings: instance config, importlib
            offences += [
                f"{rel}:{node.lineno}: {n}"
                for n in names
                if n.split(".")[0].startswith("dagster") and any(p.startswith("_") for p in n.split(".")[1:])
            ]
    assert offences == []


def test_the_public_api_check_sees_private_imports():
    assert _PRIVATE.findall("dagster._core.test_utils and dagster_aws._x but not dagster.asset") == [
        "dagster._core",
        "dagster_aws._x",
    ]


def test_jobs_select_assets_by_the_keys_their_modules_define():
    for path in _files("jobs"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("assets", "keys"):
                for arg in node.args:
                    literal = isinstance(arg, ast.List | ast.Tuple | ast.Constant) or (
                        isinstance(arg, ast.Call) and getattr(arg.func, "id", None) == "AssetKey"
                    )
                    assert not literal, f"{path.relative_to(REPO)}:{node.lineno}: select by the asset module's key"
