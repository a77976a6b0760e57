"""The package's layers point down: no module imports a higher layer (lazy imports inside functions included), and
the module-level imports between the package's modules have no cycle. The order is the one the package docstring
states (``hf_projections/__init__.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hf_projections

PACKAGE_DIR = Path(hf_projections.__file__).resolve().parent
# Lowest first; a module may import its own layer and any lower one.
LAYERS = [
    {"atomic", "checks", "version"},
    {"heads"},
    {"modeling"},
    {"data", "retrieval"},
    {"evaluation", "training"},
    {"integrations"},
    {"sweep", "colbertize"},
    {"cli", "__init__", "__main__"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The top-level part of a package module (``hf_projections.training.api`` -> ``training``); the package root
    itself is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}


def imports_of(path: Path, top_level_only: bool = False, source: str | None = None) -> list[tuple[str, int]]:
    """``(imported hf_projections module, line)`` for every import in the file (absolute and relative); with
    ``top_level_only`` only the statements that run at import time (module body, including try/if blocks)."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    nodes = ast.walk(tree) if not top_level_only else _module_level(tree.body)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "hf_projections"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if not (PACKAGE_DIR.parent / target.replace(".", "/")).with_suffix(".py").exists():
                    continue  # a flat-folder import of the remote-code copy (its ``except ImportError`` branch)
            else:
                target = node.module or ""
            if target.split(".")[0] == "hf_projections":
                found.append((target, node.lineno))
    return found


def _module_level(body):
    for node in body:
        yield node
        if isinstance(node, (ast.Try, ast.If)):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from _module_level(block)
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(name) for name in package_modules()}
    assert parts <= set(LEVEL), f"give these a layer in LAYERS and the package docstring: {sorted(parts - set(LEVEL))}"


@pytest.mark.parametrize("name", sorted(package_modules()))
def test_imports_point_down(name):
    path = package_modules()[name]
    level = LEVEL[part_of(name)]
    upward = [
        f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {target} ({part_of(target)}, layer {LEVEL[part_of(target)]})"
        for target, line in imports_of(path)
        if LEVEL.get(part_of(target), -1) > level
    ]
    assert not upward, f"{name} is in layer {level} ({part_of(name)}) but " + "; ".join(upward)


def test_module_level_imports_have_no_cycle():
    modules = package_modules()

    def resolve(target: str) -> str | None:
        while target and target not in modules:  # "from pkg.mod import name" names a module, or a name in one
            target = target.rsplit(".", 1)[0] if "." in target else ""
        return target or None

    graph = {
        name: {resolved for target, _ in imports_of(path, top_level_only=True)
               if (resolved := resolve(target)) is not None and resolved != name}
        for name, path in modules.items()
    }
    # A submodule importing its own package (or any package above it) would loop through that package's __init__.
    for name, targets in graph.items():
        for target in targets:
            assert not name.startswith(target + "."), f"{name} imports its enclosing package {target}"
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_the_checker_sees_upward_and_relative_imports():
    """The scanner itself: a lazy upward import inside a function and a relative import are both found."""
    fake = PACKAGE_DIR / "modeling" / "_probe_for_test.py"
    source = "def f():\n    from hf_projections.integrations import model_card\nfrom .maxsim import maxsim\n"
    found = imports_of(fake, source=source)
    assert ("hf_projections.integrations", 2) in found and ("hf_projections.modeling.maxsim", 3) in found
    assert LEVEL[part_of("hf_projections.integrations")] > LEVEL[part_of("hf_projections.modeling._probe_for_test")]
