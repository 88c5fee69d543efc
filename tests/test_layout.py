"""The package's shape: no module imports another that imports it back, directly or in a loop."""

import ast
from pathlib import Path

import backfire

ROOT = Path(backfire.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The backfire modules ``path`` imports at module level or inside functions (lazy imports count:
    a loop through a lazy import is still a loop a newcomer must untangle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found.update(n for n in names if n in modules)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: _imports(path, set(files)) - {name} for name, path in files.items()}


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ re-exporting its own modules is not a loop of ours
    graph = {name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack[stack.index(dep):] + [node, dep]))
            if dep not in state:
                visit(dep, stack + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_leaf_modules_import_nothing_of_ours_and_models_know_nothing_of_protection_or_judging():
    graph = _graph()
    for leaf in ("backfire.pixels", "backfire.masks", "backfire.errors", "backfire.inception"):
        assert graph[leaf] == set(), (leaf, graph[leaf])
    for name in (n for n in graph if n == "backfire.io" or n.startswith("backfire.io.")):
        outside = {d for d in graph[name] if not d.startswith("backfire.io.")}
        assert outside <= {"backfire.pixels"}, (name, outside)  # files are written of pixels
    for name, deps in graph.items():
        if name.startswith("backfire.inpainters"):
            wrong = {d for d in deps if d.startswith(("backfire.judge", "backfire.protect", "backfire.jobs"))}
            assert not wrong, (name, wrong)
