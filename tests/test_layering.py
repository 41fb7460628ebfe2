"""The package's layering, checked on the source (``ast``, nothing is imported).

Every module of ``src/deeprepair`` belongs to the layer of its top-level name
(``deeprepair.models.checkpoint`` -> ``models``). Layers, lowest first; a module may import
its own layer and the layers below it, never one above:

    0  the root package (only ``__version__`` at import time), errors, heap, metrics, bounds,
       tables (Markdown), figures (matplotlib, PNG), repair_config (RepairConfig, presets, the repair flags; plain data, no torch)
    1  data                          arrays, datasets, failure sets, atomic files
    2  corruptions                   CIFAR-10-C generator (writes through data)
    3  models, engine, distributed   architectures, checkpoints; device, autocast, predict; torchrun ranks
    4  train                         standard training
    5  style, cluster, augment       style transfer, k-means/Eq. 4, AugMix/StyleAug
    6  mining, evaluate              failures, Dc/De split; accuracy on corrupted sets
    7  repair                        the repair loop, baselines, regression control, reports
    8  bench, workflows              the benchmark grid and its report; what each command does (the demo too)
    9  cli, cli_parser, __main__     the command line (its flags in cli_parser)

Imports under ``if TYPE_CHECKING:`` are for annotations only and do not count. Imports inside
functions do count (a lazy import is still a dependency). The root package's public names
(``from deeprepair import repair, ...``) are resolved lazily by its ``__getattr__`` through
``importlib``, so its body must hold no ``deeprepair`` import: that is checked too.

Where a lower layer needs something a higher one defines, the higher one registers it (e.g.
``models.checkpoint.register_checkpoint_kind``, which ``repair.gate`` calls for routed repairs).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deeprepair"

LAYERS = [
    {"deeprepair", "errors", "heap", "metrics", "bounds", "tables", "figures", "repair_config"},
    {"data"},
    {"corruptions"},
    {"models", "engine", "distributed"},
    {"train"},
    {"style", "cluster", "augment"},
    {"mining", "evaluate"},
    {"repair"},
    {"bench", "workflows"},
    {"cli", "cli_parser", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "deeprepair"}
                continue
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "deeprepair":
                continue
            for alias in node.names:  # `from pkg import submodule` depends on the submodule
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in modules else target)
        graph[name] = {d for d in deps if d != name}
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module}: add its top-level name {top!r} to a layer in tests/test_layering.py")


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_lower_layers_never_import_higher_ones():
    bad = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
           for a, deps in sorted(_graph().items()) for b in sorted(deps) if _layer(b) > _layer(a)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_root_package_imports_nothing_of_its_own_at_import_time():
    tree = ast.parse((SRC / "__init__.py").read_text())
    assert not [n for n in _imports(tree)
                if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("deeprepair"))
                or isinstance(n, ast.Import) and any(a.name.startswith("deeprepair") for a in n.names)]


def test_the_checker_sees_a_violation_and_a_cycle(monkeypatch):
    fake = {"deeprepair.models.checkpoint": {"deeprepair.repair.gate"},
            "deeprepair.repair.gate": {"deeprepair.models.checkpoint"}}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: fake)
    try:
        test_lower_layers_never_import_higher_ones()
    except AssertionError as exc:
        assert "deeprepair.models.checkpoint (layer 3) imports deeprepair.repair.gate (layer 7)" in str(exc)
    else:
        raise AssertionError("the layer check missed models -> repair")
    try:
        test_no_import_cycles()
    except AssertionError as exc:
        assert "deeprepair.models.checkpoint -> deeprepair.repair.gate -> deeprepair.models.checkpoint" in str(exc)
    else:
        raise AssertionError("the cycle check missed a two-module cycle")


def test_type_checking_imports_do_not_count():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..repair import x\n"
                     "import deeprepair.errors\n")
    names = [getattr(n, "module", None) or n.names[0].name for n in _imports(tree)]
    assert sorted(names) == ["deeprepair.errors", "typing"]
