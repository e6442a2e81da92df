"""Layering of `wsi_pipeline`: no import cycles, between modules or between the packages they sit in.

The import graph is read from the source with `ast` (nothing is imported, so the test takes well under a
second). Imports under `if TYPE_CHECKING:` never run and are left out. Imports inside functions (kept for
heavy optional dependencies) count for the cycle checks, since they are dependencies all the same, and not
for the "loads without torch" checks, since they do not run when the module is loaded. A cycle fails the test with its path, e.g.
`wsi_pipeline.config -> wsi_pipeline.stores.run_folder -> wsi_pipeline.config`.
"""

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "wsi_pipeline"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _load_time_nodes(body: list[ast.stmt], in_functions: bool = False) -> Iterator[ast.stmt]:
    """Statements that run when the module is imported (with `in_functions`, also those in function
    bodies, which run when the function is called); never those under `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not in_functions:
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _load_time_nodes(node.orelse, in_functions)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if (
                isinstance(children, list)
                and children
                and isinstance(children[0], ast.stmt | ast.excepthandler)
            ):
                yield from _load_time_nodes(children, in_functions)  # type: ignore[arg-type]


def _load_time_imports(name: str, path: Path, in_functions: bool = False) -> Iterator[str]:
    """Every module name that loading `name` imports, absolute (`from . import x` resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _load_time_nodes(ast.parse(path.read_text(encoding="utf-8")).body, in_functions):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from targets


def _imports(name: str, path: Path, known: set[str], in_functions: bool) -> set[str]:
    """The `wsi_pipeline` modules that loading `name` imports (a package import runs its `__init__`)."""
    found: set[str] = set()
    for target in _load_time_imports(name, path, in_functions):
        if target.split(".")[0] == PACKAGE:
            parts = target.split(".")
            # Importing a.b.c loads a, a.b and a.b.c; `from a.b import c` loads c only if it is a module.
            found.update(
                ".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in known
            )
    # A module's own ancestors are loaded before it, whoever imports it; naming them adds no edge.
    return {f for f in found if not name.startswith(f"{f}.") and f != name}


@cache
def _graph(in_functions: bool = True) -> dict[str, set[str]]:
    """Module -> the modules it imports; `in_functions`: also imports inside functions, which are
    dependencies all the same (a registry that imports its catalog lazily, which imports the registry,
    is a cycle), only deferred."""
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known, in_functions) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that starts and ends at the same node, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between the folders modules sit in (`wsi_pipeline.stores`, `wsi_pipeline.config`, ...)."""

    def floor(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(floor(module), set()).update(
            floor(t) for t in targets if floor(t) != floor(module)
        )
    return packages


def test_the_graph_sees_imports() -> None:
    """Guards the reader itself: a graph with no edges would pass the cycle checks for the wrong reason."""
    graph = _graph()
    assert "wsi_pipeline.stores.atomic" in graph["wsi_pipeline.stores.tile_store"]
    assert "wsi_pipeline.errors" in graph["wsi_pipeline.config"]


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_import_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages() -> None:
    """A stage folder and a shared layer never import each other both ways (e.g. `config` <-> `stores`)."""
    cycle = _find_cycle(_package_graph(_graph()))
    assert cycle is None, "package import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("wsi_pipeline.slides", "wsi_pipeline.stores"),
        *(
            ("wsi_pipeline.stores", f"wsi_pipeline.{stage}")
            for stage in ("tiling", "extract", "train", "evaluate")
        ),
        ("wsi_pipeline.models", "wsi_pipeline.train"),
        ("wsi_pipeline.models", "wsi_pipeline.evaluate"),
        ("wsi_pipeline.inference", "wsi_pipeline.evaluate"),
        ("wsi_pipeline.inference", "wsi_pipeline.predict"),
    ],
)
def test_a_lower_floor_never_imports_a_higher_one(lower: str, higher: str) -> None:
    graph = _graph()
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith(lower)
        for target in targets
        if target.startswith(higher)
    )
    assert not offenders, f"{lower} imports {higher}: {offenders}"


STAGES = ("tiling", "extract", "train", "evaluate")  # `demo` and `predict` run stages; nothing runs them


@pytest.mark.parametrize("stage", STAGES)
def test_stages_never_import_each_other(stage: str) -> None:
    """Stages meet only through `stores/` (docs/ARCHITECTURE.md, "Stage map"), so each can be run, resumed
    or replaced alone; code two stages need goes into a shared layer."""
    others = tuple(f"wsi_pipeline.{s}" for s in STAGES if s != stage)
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if module.startswith(f"wsi_pipeline.{stage}")
        for target in targets
        if target.startswith(others)
    )
    assert not offenders, f"{stage} imports another stage: {offenders}"


def _loaded_with(module: str, graph: dict[str, set[str]]) -> set[str]:
    """Every `wsi_pipeline` module that importing `module` loads: its packages' `__init__` first, then on."""
    parts = module.split(".")
    todo = [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen and name in graph:
            seen.add(name)
            todo.extend(graph[name])
    return seen


@pytest.mark.parametrize(
    "config_module",
    [
        "wsi_pipeline.evaluate.config",
        "wsi_pipeline.train.config",
        "wsi_pipeline.extract.config",
        "wsi_pipeline.tiling.config",
        "wsi_pipeline.models.config",
    ],
)
def test_stage_configs_load_without_torch(config_module: str) -> None:
    """`wsi <stage> --help`, `--print-config` and config validation must not pay torch's import (seconds)."""
    graph = _graph(in_functions=False)
    modules = _modules()
    heavy = sorted(
        m
        for m in _loaded_with(config_module, graph)
        if any(t.split(".")[0] == "torch" for t in _load_time_imports(m, modules[m]))
    )
    assert not heavy, f"importing {config_module} loads torch through: {heavy}"
