"""The package's shape: imports run one way, from the contracts to serving, with no cycles.

The import graph is built from the source (every ``import`` statement, including those inside
functions), so a lazy import cannot hide a dependency against the rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smartpick_ml"

#: Which stages each stage may import (itself included). Downstream stages are never imported by
#: upstream ones; training does not import the serving side, and inference not training.
ALLOWED: dict[str, set[str]] = {
    "contracts": {"contracts"},
    "data": {"contracts", "data"},
    "simulation": {"contracts", "data", "simulation"},
    "modelling": {"contracts", "data", "modelling"},
    "training": {"contracts", "data", "simulation", "modelling", "training"},
    "inference": {"contracts", "data", "modelling", "inference"},
    "serving": {"contracts", "data", "modelling", "inference", "serving"},
    # evaluates trained models, after training: it may use training's plots and tracking
    "evaluation": {"contracts", "data", "simulation", "modelling", "training", "inference",
                   "evaluation"},
}
#: the entry points, which may import any stage
TOP = {"cli", "__init__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, here: str, is_package: bool = False) -> set[str]:
    """The package's modules that the source of module ``here`` imports (``from a.b import c``
    counts ``a.b.c`` when that is a module, else ``a.b``)."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("smartpick_ml"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this package
                base = here.split(".")[: len(here.split(".")) - node.level
                                       + is_package]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            if not mod.startswith("smartpick_ml"):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if sub in ALL_MODULES else mod)
    found.discard(here)
    return found


ALL_MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imported_modules(p.read_text(encoding="utf-8"), module_name(p),
                                          p.name == "__init__.py")
         for p in PACKAGE.rglob("*.py")}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_belongs_to_a_stage_or_is_an_entry_point():
    stray = sorted(m for m in ALL_MODULES if stage(m) not in ALLOWED and stage(m) not in TOP)
    assert not stray, f"modules outside the stages {sorted(ALLOWED)}: {stray}"


def against_the_rules(module: str, imports: set[str]) -> list[str]:
    """The imports of ``module`` that its stage may not make."""
    allowed = ALLOWED[stage(module)]
    return sorted(m for m in imports if m != "smartpick_ml" and stage(m) not in allowed)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if stage(m) in ALLOWED))
def test_imports_run_one_way(module):
    against = against_the_rules(module, GRAPH[module])
    assert not against, (f"{module} ({stage(module)}) imports {against}; "
                         f"{stage(module)} may import only {sorted(ALLOWED[stage(module)])}")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles():
    # the package root only re-exports lazily; an import of ``smartpick_ml`` itself is no edge
    graph = {m: {d for d in deps if d != "smartpick_ml"} for m, deps in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


@pytest.mark.parametrize(("module", "source", "bad"), [
    ("smartpick_ml.contracts.errors",
     "def f():\n    from smartpick_ml.training.pipeline import run_training\n",
     ["smartpick_ml.training.pipeline"]),
    ("smartpick_ml.training.tracking", "from smartpick_ml.serving import pyfunc\n",
     ["smartpick_ml.serving.pyfunc"]),
    ("smartpick_ml.inference.predictor", "import smartpick_ml.training.evaluate as e\n",
     ["smartpick_ml.training.evaluate"]),
    ("smartpick_ml.simulation.season", "from ..modelling import features\n",
     ["smartpick_ml.modelling.features"]),
    ("smartpick_ml.serving.pyfunc", "from smartpick_ml.inference.predictor import X\n", []),
])
def test_the_checker_reports_imports_against_the_rules(module, source, bad):
    """The checker itself, on made-up sources: lazy, aliased and relative imports all count."""
    assert against_the_rules(module, imported_modules(source, module)) == bad


def test_the_public_api_is_exported_and_documented():
    import smartpick_ml

    assert set(smartpick_ml.__all__) >= {"MatchPredictor", "load_train_config", "run_training"}
    for name in smartpick_ml.__all__:
        obj = getattr(smartpick_ml, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"smartpick_ml.{name} has no docstring"
    with pytest.raises(AttributeError):
        smartpick_ml.not_a_public_name  # noqa: B018
