"""The layering rule of the README's Layout section, read from the code's own imports.

Bottom to top: `gpu_ops` and `embedding_assets/core` (plain Python) → `resources` → `partitions`,
the assets, checks and jobs, `sensors` → `embedding_assets/definitions.py` → `serving`, the
command-line tools and `benchmarks`. A module may import its own layer and the layers below.
"""

import ast
from pathlib import Path

import pytest

from resources.deployments import PROJECT_ROOT

PACKAGES = ("gpu_ops", "embedding_assets", "resources", "partitions", "sensors", "serving", "benchmarks")
# (module prefix, layer): the longest matching prefix decides.
LAYERS = [
    ("gpu_ops", 0),
    ("embedding_assets.core", 0),
    ("resources", 1),
    ("partitions", 2),
    ("embedding_assets", 2),
    ("sensors", 2),
    ("embedding_assets.definitions", 3),
    ("serving", 4),
    ("embedding_assets.cli", 4),
    ("benchmarks", 4),
]
# What the plain core may never import: Dagster, and every layer above it.
PLAIN_CORE_FORBIDDEN = ("dagster", "dagster_aws", "dagster_k8s", "resources", "sensors", "partitions", "serving")


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (PROJECT_ROOT / package).rglob("*.py")}


def imported_names(path: Path, module: str) -> set[str]:
    """Every module `path` imports, anywhere in the file (lazy imports inside functions count)."""
    names = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a `from package import name` counts the package)."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        graph[module] = {name for name in imported_names(path, module) if name in modules and name != module}
    return graph


def layer_of(module: str) -> int:
    matches = [(len(prefix), layer) for prefix, layer in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(import_graph()) == []


def test_the_plain_core_imports_neither_dagster_nor_the_layers_above():
    modules = project_modules()
    offending = []
    for module, path in modules.items():
        if layer_of(module) != 0:
            continue
        for name in imported_names(path, module):
            if name.split(".")[0] in PLAIN_CORE_FORBIDDEN:
                offending.append(f"{module} imports {name}")
    assert offending == []


def test_gpu_ops_stands_alone_below_the_core():
    graph = import_graph()
    assert [
        f"{m} -> {t}" for m, ts in graph.items() if m.startswith("gpu_ops") for t in ts if not t.startswith("gpu_ops")
    ] == []


def test_there_is_no_import_cycle():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("package", ["embedding_assets/core", "gpu_ops"])
def test_no_plain_module_is_over_300_lines(package):
    long = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 300
    }
    assert long == {}


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The rule itself can fail: a core module importing a resource, and two modules importing each other."""
    graph = {"embedding_assets.core.store": {"resources.lance_store"}, "resources.lance_store": set()}
    assert upward_imports(graph) == ["embedding_assets.core.store (layer 0) imports resources.lance_store (layer 1)"]
    assert cycles({"gpu_ops.a": {"gpu_ops.b"}, "gpu_ops.b": {"gpu_ops.a"}}) == [["gpu_ops.a", "gpu_ops.b"]]
