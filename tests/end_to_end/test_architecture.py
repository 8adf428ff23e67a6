"""The package's shape (issue #14): rooms named after the pipeline, data flowing one way, no import circles.

Every `sftprep` import, at module level or inside a function, is an edge of the module graph; it must have no
cycle, and a room may import only rooms that come before it in the pipeline.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
# Base modules first, then the stages in pipeline order, then what is built on them.
ROOMS = [
    "types",
    "errors",
    "cache",
    "outdir",
    "read",
    "templates",
    "tokenize",
    "labels",
    "preparation",
    "api",
    "report",
    "train",
]
ROOMS += ["cli", "__main__", "__init__"]


def modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "sftprep").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sftprep"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sftprep")}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t in imports(p) if t in mods and t not in (m, "sftprep")} for m, p in mods.items()}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_is_in_a_room() -> None:
    assert {room(m) for m in modules()} <= set(ROOMS)


def test_no_import_circles() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_data_flows_one_way() -> None:
    back = defaultdict(list)
    for m, targets in graph().items():
        for t in targets:
            if ROOMS.index(room(t)) > ROOMS.index(room(m)):
                back[m].append(t)
    assert not back, f"modules importing a later room: {dict(back)}"


def test_a_broken_layering_is_caught() -> None:  # the checks above can fail
    assert ROOMS.index("preparation") > ROOMS.index("read")
    assert "sftprep.preparation.pipeline" in graph()["sftprep.preparation.run"]
