"""The house of `cifar/`: subpackages in layers that import one way, no circle between modules, and
docs/architecture.md's layout naming every module where it lives."""

from __future__ import annotations

import ast

from tests.factory import REPO

# Bottom to top: a module imports only from its own layer and the layers before it.
LAYERS = (
    {"config", "atomic", "terminal", "stats", "tta", "calibration"},  # the base, top-level modules
    {"sources"},
    {"store"},
    {"modeling"},
    {"inference"},
    {"analysis"},
    {"training"},
    {"service"},
    {"cli_tables", "cli_runs", "cli", "__main__"},  # the command line, top-level modules
)
MODULES = sorted(path for path in (REPO / "cifar").rglob("*.py") if path.name != "__init__.py")


def _name(path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _room(module: str) -> str:
    """The layer member a module belongs to: its subpackage, or itself at the top level."""
    return module.split(".")[1]


def _layer(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if _room(module) in layer)


def _imports(path) -> set[str]:
    """The cifar modules `path` imports (a subpackage's module when `from cifar.pkg import mod`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("cifar.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cifar":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if (REPO / (full.replace(".", "/") + ".py")).exists() else node.module)
    return {name for name in names if name != "cifar"}


GRAPH = {_name(path): _imports(path) for path in MODULES}


def test_every_module_is_in_a_layer():
    assert all(any(_room(module) in layer for layer in LAYERS) for module in GRAPH), sorted(GRAPH)


def test_imports_point_down_the_layers():
    upward = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if target in GRAPH and _layer(target) > _layer(module)
    ]
    assert not upward, upward


def test_no_import_circle():
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError(f"import circle: {' -> '.join([*path[path.index(module) :], module])}")
        if module in done:
            return
        path.append(module)
        for target in GRAPH.get(module, ()):
            visit(target)
        path.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)


def test_the_architecture_page_places_every_module():
    """Each module is an entry of the layout block, under its subpackage's heading."""
    text = (REPO / "docs/architecture.md").read_text()
    block = text[text.index("## Layout") :].split("```")[1]
    placed, package = set(), None
    for line in block.splitlines():
        indent, entry = len(line) - len(line.lstrip()), line.strip().split(" ")[0]
        if indent == 2 and entry.endswith("/"):
            package = entry.rstrip("/")
        elif indent == 2 and entry.endswith(".py"):
            placed.add(f"cifar.{entry.removesuffix('.py')}")
        elif indent == 4 and entry.endswith(".py"):
            placed.add(f"cifar.{package}.{entry.removesuffix('.py')}")
    for extra in ("__main__",):  # named in cli.py's line
        placed.add(f"cifar.{extra}")
    assert placed == set(GRAPH), sorted(set(GRAPH) ^ placed)
