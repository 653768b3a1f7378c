"""earthvl's import layering, read from the source with `ast`: no import loop among earthvl modules, and no module
importing one of a higher layer. Imports inside functions count too (they still tie the two modules together).

The layers are the README's "Where things live", low to high. A module belongs to the layer of the longest entry of
`LAYERS` that names it or a package above it; every module must belong to one. Imports within a layer are free
(loops aside). An import from a lower layer up to a higher one is allowed only if `EXCEPTIONS` lists it with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "earthvl"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "earthvl",
            "earthvl.errors",
            "earthvl.atomic",
            "earthvl.paths",
            "earthvl.cache",
            "earthvl.images",
            "earthvl.http_headers",
            "earthvl.prompts",
            "earthvl.recipes",
            "earthvl.dataset_folder",
            "earthvl.eval_results",
            "earthvl.training_output",
        ),
    ),
    (
        "dataset facts",
        (
            "earthvl.builders",
            "earthvl.builders.chatearthnet",
            "earthvl.builders.chatearthnet.layout",
            "earthvl.builders.chatearthnet.features",
            "earthvl.builders.chatearthnet.landcover",
            "earthvl.builders.chatearthnet.generation",
            "earthvl.builders.chatearthnet.template",
            "earthvl.builders.chatearthnet.maps",
            "earthvl.builders.gaia",
            "earthvl.builders.gaia.layout",
            "earthvl.builders.stratified_splits",
        ),
    ),
    ("models", ("earthvl.models", "earthvl.llm")),
    ("sample world", ("earthvl.sample",)),
    (
        "datasets",
        (
            "earthvl.builders.download",
            "earthvl.builders.folder",
            "earthvl.builders.chatearthnet.build",
            "earthvl.builders.chatearthnet.card",
            "earthvl.builders.gaia.build",
            "earthvl.builders.gaia.card",
            "earthvl.builders.gaia.images",
            "earthvl.builders.gaia.annotate",
            "earthvl.generate",
            "earthvl.cards.datasets",
            "earthvl.cards.plots",
            "earthvl.cards.statistics",
            "earthvl.data",
            "earthvl.model_names",
        ),
    ),
    ("training and evaluation", ("earthvl.train", "earthvl.eval")),
    ("publishing", ("earthvl.cards", "earthvl.hub", "earthvl.space")),
    ("entry points", ("earthvl.scripts", "earthvl.cli", "earthvl.__main__", "earthvl.quickstart", "earthvl.quickstart_plan")),
)
"""(layer, module names or packages), lowest layer first."""

EXCEPTIONS: dict[tuple[str, str], str] = {}
"""(importer, imported) -> why this upward import is allowed."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The earthvl modules an import statement of `module` names (a `from package import module` names the module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    found = []
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name != module and name.split(".")[0] == "earthvl":
            found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        nodes = (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))
        graph[module] = {target for node in nodes for target in imported(module, node)}
    return graph


def layer_of(module: str) -> int:
    """The index in `LAYERS` of the longest entry naming `module` or a package above it."""
    best: tuple[int, int] | None = None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (index, len(name))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py and to the README map")
    return best[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `graph` as the list of modules along it, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


GRAPH = import_graph()


def test_the_graph_sees_the_imports_it_must():
    # Guards the parser itself: a top-level import, a `from package import module`, and an import inside a function.
    assert "earthvl.errors" in GRAPH["earthvl.data"]
    assert "earthvl.builders.chatearthnet.layout" in GRAPH["earthvl.builders.chatearthnet.build"]
    assert "earthvl.models.tiny" in GRAPH["earthvl.sample"]


def test_no_import_loop():
    assert find_cycle(GRAPH) is None, f"import loop: {' -> '.join(find_cycle(GRAPH) or [])}"


def test_find_cycle_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_layer(module):
    layer_of(module)


def test_no_import_from_a_lower_layer_up_to_a_higher_one():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module) and (module, target) not in EXCEPTIONS
    ]
    assert upward == []


def test_exceptions_are_real_imports():
    stale = [pair for pair in EXCEPTIONS if pair[1] not in GRAPH.get(pair[0], set())]
    assert stale == [], f"EXCEPTIONS lists imports that no longer exist: {stale}"


def test_the_readme_map_names_the_same_layers_in_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Where things live", 1)[1].split("\n### ", 1)[0]
    named = [line.split("**")[1] for line in section.splitlines() if line.startswith("- **")]
    assert [name for name in named if name != "shared contracts"] == [name for name, _ in LAYERS]
