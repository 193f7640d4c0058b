"""The imports of genexp run one way through its layers: foundations, then data and networks,
metrics, models, callbacks, and the application (run, command line, tools) on top. No module
imports from a layer above its own, so each layer can be read, tested and reused without the
ones above it."""

import ast
from pathlib import Path

from conftest import REPO

# Bottom to top; a module belongs to the first layer that names it or its package.
LAYERS = [
    ("foundation", ["genexp.errors", "genexp.files", "genexp.value_range", "genexp.config_dir", "genexp.console",
                    "genexp.images", "genexp.lightning_compat", "genexp.__init__"]),
    ("data and networks", ["genexp.data", "genexp.nets"]),
    ("metrics", ["genexp.metrics"]),
    ("models", ["genexp.models"]),
    ("callbacks", ["genexp.callbacks"]),
    ("application", ["genexp"]),
]


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genexp"):
            found |= {node.module} if node.module != "genexp" else {f"genexp.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("genexp")}
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted((REPO / "genexp").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for imported in imports(path):
            if layer_of(imported) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} "
                              f"({LAYERS[layer_of(imported)][0]})")
    assert not upward, "\n".join(upward)


def test_the_layer_table_would_catch_an_upward_import():
    assert layer_of("genexp.metrics.features") < layer_of("genexp.callbacks.samples")
    assert layer_of("genexp.models.gan") > layer_of("genexp.metrics.pixel_mmd")
    assert layer_of("genexp.images") < layer_of("genexp.metrics.sample_quality")
