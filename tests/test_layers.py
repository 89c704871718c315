"""Layers that only point down, and no import cycles, read from the source with ``ast``.

Every ``import`` counts: at module level, inside functions (lazy imports) and under ``TYPE_CHECKING``,
since each one is a dependency a reader must follow and a cycle waiting to happen. The layers, bottom -> top
(a module may import its own layer and the layers below it):

    base     synthdb (the package), errors, files, progress, untrusted, angles, seeds, params, distributed
    catalog  synthdb.catalog.* (SQLAlchemy, never torch), synthdb.workspace
    store    synthdb.store.* (Parquet, the commit, HDF5, layout, fsck)
    context  synthdb.context (an opened workspace: catalog + store)
    nets     synthdb.nets.* (torch networks and weight readers)
    faces    synthdb.faces.* (detect, align, embed, landmarks, geometry)
    models   synthdb.defaults, synthdb.zoo (the model factory: finds weights, builds networks)
    jobs     synthdb.sources, embed_dataset, crop_files, latent, generate, analysis, export, datasets
    top      synthdb.admin, synthdb.demo
    cli      cli/ (installed as synthdb.cli)

``nets`` and ``faces`` sit above ``context`` in the order but never touch ``catalog``, ``store`` or
``context``: a network takes a weights path, never a workspace, so it can be used (and tested) without one.
That is why ``crop_files`` (``synthdb crop``) and ``embed_dataset`` (``synthdb embed``) are jobs and not
in ``faces``: they take their detectors and embedders from the zoo. Jobs may use each other, without
cycles (``generate`` uses ``latent``'s directions; ``latent`` uses nothing of ``generate``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("synthdb", "synthdb.openblas", "synthdb.errors", "synthdb.files", "synthdb.progress",
              "synthdb.untrusted", "synthdb.angles", "synthdb.seeds", "synthdb.params",
              "synthdb.distributed")),
    ("catalog", ("synthdb.catalog", "synthdb.workspace")),
    ("store", ("synthdb.store",)),
    ("context", ("synthdb.context",)),
    ("nets", ("synthdb.nets",)),
    ("faces", ("synthdb.faces",)),
    ("models", ("synthdb.defaults", "synthdb.zoo")),
    ("jobs", ("synthdb.sources", "synthdb.embed_dataset", "synthdb.crop_files", "synthdb.latent",
              "synthdb.generate", "synthdb.analysis", "synthdb.export", "synthdb.datasets")),
    ("top", ("synthdb.admin", "synthdb.demo")),
    ("cli", ("synthdb.cli",)),
)
#: Layers that must not import these lower ones although the order would allow it.
NEVER = {
    "nets": {"catalog", "store", "context"},
    "faces": {"catalog", "store", "context"},
}
#: Third-party packages a layer must not import (the catalog stays cheap to import and torch-free).
NEVER_THIRD_PARTY = {"catalog": {"torch", "torchvision", "kornia", "facenet_pytorch"}}
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    """The importable name of a source file (``cli/`` is installed as ``synthdb.cli``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "cli":
        parts = ["synthdb", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    files = [*ROOT.joinpath("synthdb").rglob("*.py"), *ROOT.joinpath("cli").rglob("*.py")]
    return {module_name(path): path for path in files}


MODULES = sources()
PACKAGES = {module for module, path in MODULES.items() if path.name == "__init__.py"} - {"synthdb"}


def imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in the file, relative ones resolved;
    ``from package import name`` names the submodule when ``name`` is one."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in MODULES else base), node.lineno


def layer_of(module: str) -> str:
    """The layer of a synthdb module: the longest matching prefix; unclassified modules fail the test."""
    matches = [
        (len(prefix), name)
        for name, prefixes in LAYERS
        for prefix in prefixes
        if module == prefix or (prefix != "synthdb" and module.startswith(prefix + "."))
    ]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return max(matches)[1]


def package_of(module: str) -> str:
    """``synthdb.generate.references`` -> ``synthdb.generate``; top-level modules are their own package."""
    top = ".".join(module.split(".")[:2])
    return top if top in PACKAGES else module


def edges() -> list[tuple[str, str, int]]:
    """(importer, imported synthdb module, line) for every first-party import."""
    return [
        (module, target, line)
        for module, path in sorted(MODULES.items())
        for target, line in imports(module, path)
        if target == "synthdb" or target.startswith("synthdb.")
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer() -> None:
    assert {layer_of(module) for module in MODULES} == set(RANK)


def test_imports_only_point_down() -> None:
    wrong = []
    for module, target, line in edges():
        src, dst = layer_of(module), layer_of(target)
        if RANK[dst] > RANK[src] or dst in NEVER.get(src, set()):
            wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} ({src}) imports {target} ({dst})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_catalog_never_imports_torch() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for module, path in MODULES.items()
        for target, line in imports(module, path)
        if target.split(".")[0] in NEVER_THIRD_PARTY.get(layer_of(module), set())
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("granularity", ["package", "module"])
def test_no_import_cycles(granularity: str) -> None:
    node = package_of if granularity == "package" else (lambda module: module)
    graph: dict[str, set[str]] = defaultdict(set)
    for module, target, _ in edges():
        if node(module) != node(target):
            graph[node(module)].add(node(target))
    assert cycles(graph) == []


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Imports inside functions, under TYPE_CHECKING and relative ones are all found and resolved."""
    source = tmp_path / "module.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import zoo\n"
        "from .catalog import schema\n"
        "from ..synthdb import errors\n"
        "if TYPE_CHECKING:\n"
        "    from synthdb.context import Context\n"
        "def f():\n"
        "    import synthdb.store.commit\n"
        "    from synthdb.nets.cards import get_card\n",
        encoding="utf-8",
    )
    found = [target for target, _ in imports("synthdb.demo", source)]
    assert found == [
        "typing", "synthdb.zoo", "synthdb.catalog.schema", "synthdb.errors", "synthdb.context",
        "synthdb.store.commit", "synthdb.nets.cards",
    ]
    assert [layer_of(t) for t in found[1:]] == ["models", "catalog", "base", "context", "store", "nets"]


def test_the_checker_classifies_and_finds_cycles() -> None:
    assert layer_of("synthdb") == "base" and layer_of("synthdb.catalog.schema") == "catalog"
    assert layer_of("synthdb.cli.app") == "cli" and layer_of("synthdb.zoo") == "models"
    with pytest.raises(AssertionError, match="synthdb.nowhere is in no layer"):
        layer_of("synthdb.nowhere")
    assert package_of("synthdb.generate.references") == "synthdb.generate"
    assert package_of("synthdb.zoo") == "synthdb.zoo"
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
