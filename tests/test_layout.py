"""The package's shape: no module imports another that imports it back, directly or in a loop; no module
imports one higher up the road (evaluate above jobs above judge); protect, judge and the models take
pixels from ``backfire.pixels``, not from the file layer."""

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


def test_protect_knows_no_concrete_wrapper_class():
    """protect/ asks an inpainter what it can do (support, framed, every_strategy, surrogate_is_edit …) and
    never which class it is: no wrapper class (pipelines, framing, cleaning) is named there."""
    import importlib
    import types

    from backfire.inpainters.base import Wrapper

    named = []
    for path in sorted((ROOT / "protect").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {}  # local name → backfire.inpainters module imported as a whole
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("backfire.inpainters"):
                for alias in node.names:
                    obj = getattr(importlib.import_module(node.module), alias.name, None)
                    if obj is None or isinstance(obj, types.ModuleType):  # a submodule: checked where it is used
                        modules[alias.asname or alias.name] = importlib.import_module(f"{node.module}.{alias.name}")
                    else:
                        named.append((path.name, alias.name, obj))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("backfire.inpainters"):
                        modules[alias.asname or alias.name] = importlib.import_module(alias.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                named.append((path.name, node.attr, getattr(modules[node.value.id], node.attr, None)))
    assert named, "protect/ imports nothing of the inpainters? the check would prove nothing"
    wrappers = [(file, name) for file, name, obj in named if isinstance(obj, type) and issubclass(obj, Wrapper)]
    assert not wrappers, wrappers


FLOORS: tuple[tuple[str, ...], ...] = (
    ("backfire", "backfire.pixels", "backfire.masks", "backfire.errors", "backfire.inception", "backfire.progress"),
    ("backfire.io",),
    ("backfire.models", "backfire.inpainters", "backfire.metric_weights", "backfire.regions", "backfire.examples"),
    ("backfire.protect",),
    ("backfire.judge",),
    ("backfire.jobs", "backfire.runners", "backfire.ray_runner", "backfire.train"),
    ("backfire.evaluate",),
    ("backfire.cli", "backfire.app"),
)
"""The road, bottom up: a module may import its own floor and the floors below, never one above. A module
that imports nothing of ours is on the ground floor wherever it is not listed."""


def _floor(module: str, graph: dict[str, set[str]]) -> int:
    for level, names in enumerate(FLOORS):
        if any(module == n or (n != "backfire" and module.startswith(n + ".")) for n in names):
            return level
    if not graph[module]:
        return 0
    raise AssertionError(f"{module} is on no floor of the road: give it one in tests/test_layout.py's FLOORS")


def test_no_arrow_back_up():
    """Nothing imports a module above its own floor: judge does not know jobs, jobs does not know evaluate."""
    graph = _graph()
    up = [(name, dep) for name, deps in graph.items() for dep in deps if _floor(dep, graph) > _floor(name, graph)]
    assert not up, "imports that go up the road: " + ", ".join(f"{a} → {b}" for a, b in sorted(up))


def _imported_names(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from module import name`` and ``import module`` (name "") in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names]
    return found


def test_protect_judge_and_inpainters_take_pixels_not_files():
    """Rounding and pictures come from ``backfire.pixels``; the file layer ``backfire.io`` is for the floors
    that read and write the user's files. The one exception: a model's weight exporter writes its file
    through the one home of atomic writes."""
    allowed = {"backfire.inpainters": {"write_atomic"}}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        room = next((r for r in ("backfire.protect", "backfire.judge", "backfire.inpainters")
                     if name == r or name.startswith(r + ".")), None)
        if room is None:
            continue
        for module, imported in _imported_names(path):
            if module == "backfire" and imported == "io" or module == "backfire.io" and not imported:
                raise AssertionError(f"{name} imports the file layer backfire.io")
            if module == "backfire.io" or module.startswith("backfire.io."):
                assert imported in allowed.get(room, set()), f"{name} imports {imported} from {module}"
