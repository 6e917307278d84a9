"""Import contract of the ss4d packages: every import goes down the layer map of docs/architecture.md, no cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import ss4d

ROOT = Path(ss4d.__file__).resolve().parent

# top-level modules of the neutral lower layer (no ss4d imports outside it)
NEUTRAL = {"errors", "io_utils", "gaussians", "lowdiscrepancy", "workers"}
_BELOW_PIPELINE = {"neutral", "media", "sparse", "nn", "models", "render"}
# package -> the packages it may import ("api" = ss4d/__init__.py and ss4d/__main__.py)
ALLOWED: dict[str, set[str]] = {
    "neutral": set(),
    "media": {"neutral"},
    "sparse": {"neutral"},
    "nn": {"neutral", "sparse"},
    "models": {"neutral", "sparse", "nn"},
    "render": {"neutral", "media"},
    "pipeline": _BELOW_PIPELINE,
    "export": _BELOW_PIPELINE | {"pipeline"},
    "data": _BELOW_PIPELINE | {"pipeline"},
    "testing": _BELOW_PIPELINE | {"pipeline"},
    "train": _BELOW_PIPELINE | {"pipeline", "data", "testing"},
    "eval": _BELOW_PIPELINE | {"pipeline", "export", "data", "testing"},
    "cli": _BELOW_PIPELINE | {"pipeline", "export", "data", "testing", "train", "eval"},
    "api": _BELOW_PIPELINE | {"pipeline", "export", "data", "testing", "train", "eval", "cli"},
}


def unit_of(module: str) -> str:
    """The contract unit of a dotted ss4d module name (``ss4d.render.camera`` -> ``render``)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "api"
    return "neutral" if parts[1] in NEUTRAL else parts[1]


def import_edges(root: Path) -> set[tuple[str, str, str, str]]:
    """``(unit, imported unit, module, imported module)`` for every ss4d import (top-level or in a function, absolute
    or relative) in the package folder ``root``, between different units."""
    edges = set()
    for f in sorted(root.rglob("*.py")):
        parts = (root.name, *f.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mod = ".".join(parts[:-1] if is_pkg else parts)
        pkg = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" for a in node.names] if target == root.name else [target]
            else:
                continue
            for t in targets:
                if t.split(".")[0] == root.name and unit_of(mod) != unit_of(t):
                    edges.add((unit_of(mod), unit_of(t), mod, t))
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed ``graph`` as a list of nodes (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def check_contract(edges, allowed=ALLOWED) -> list[str]:
    """Violations: imports of a package that ``allowed`` does not list for the importer, and a package cycle."""
    bad = [f"{m} imports {t} ({a} may not import {b})" for a, b, m, t in sorted(edges)
           if b not in allowed.get(a, set())]
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in edges:
        graph.setdefault(a, set()).add(b)
    if cycle := find_cycle(graph):
        bad.append("package cycle: " + " -> ".join(cycle))
    return bad


def test_layer_map_itself_has_no_cycle():
    assert find_cycle(ALLOWED) is None


def test_ss4d_keeps_the_import_contract():
    edges = import_edges(ROOT)
    assert {a for a, *_ in edges} <= set(ALLOWED), "a new ss4d package needs a row in ALLOWED (and the docs map)"
    assert check_contract(edges) == []


def test_a_planted_upward_import_and_cycle_are_reported(tmp_path):
    pkg = tmp_path / "ss4d"
    for sub, text in {"models/__init__.py": "", "render/__init__.py": "",
                      "models/decoder.py": "def f():\n    from ..render import camera\n",
                      "render/camera.py": "from ss4d.models.decoder import f\n",
                      "__init__.py": ""}.items():
        (pkg / sub).parent.mkdir(parents=True, exist_ok=True)
        (pkg / sub).write_text(text)
    bad = check_contract(import_edges(pkg))
    assert "ss4d.models.decoder imports ss4d.render (models may not import render)" in bad
    assert "ss4d.render.camera imports ss4d.models.decoder (render may not import models)" in bad
    assert any(b.startswith("package cycle: ") for b in bad)
