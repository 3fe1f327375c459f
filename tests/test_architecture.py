"""The package's shape: no import circles, a core of bounded size whose reading list is true, and a README
knob table that is the config's fields."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

from nanoinfer.config import EngineConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nanoinfer"
CORE_BUDGET = 2900  # lines, comments and docstrings included. 2,800 until phase 8: streaming, aborts and the
# speculative-decoding and int8 hooks took the core from 2,796 to 2,866 lines; their machinery lives beside it


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Every nanoinfer module -> the nanoinfer modules it imports anywhere (function-level imports too).
    ``from a.b import c`` names the module a.b.c when there is one, else a.b. Importing a.b.c also runs the
    package a.b's __init__ first: an edge too, unless a.b is the importer's own package (the root package,
    which every import runs, only re-exports the API)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            for target in (t for t in targets if t in modules and t != name):
                own = set(ancestors(name)) | {name, "nanoinfer"}
                edges.update(p for p in [*ancestors(target), target] if p in modules and p not in own)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles():
    graph = import_graph()
    assert "nanoinfer.engine.model_runner" in graph and graph["nanoinfer.engine.model_runner"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def reading_order() -> list[tuple[str, int]]:
    """(file, line count) of every row of docs/reading_order.md's table."""
    text = (ROOT / "docs" / "reading_order.md").read_text()
    return [(path, int(n)) for path, n in re.findall(r"^\| \d+ \| \[`([^`]+)`\]\([^)]*\) \| (\d+) \|", text, re.M)]


def test_reading_order_counts_are_true_and_the_core_stays_small():
    rows = reading_order()
    assert len(rows) > 20, "docs/reading_order.md lists the core files in a table"
    for path, count in rows:
        actual = len((ROOT / path).read_text().splitlines())
        assert actual == count, f"docs/reading_order.md says {path} has {count} lines; it has {actual}"
    total = sum(n for _, n in rows)
    text = (ROOT / "docs" / "reading_order.md").read_text()
    assert f"{total:,} lines" in text, f"docs/reading_order.md should state the total, {total:,} lines"
    assert total <= CORE_BUDGET, f"the core is {total} lines, over its budget of {CORE_BUDGET}"


def test_the_core_is_the_engine_without_its_fast_paths():
    """Every module of the core's packages is in the reading list (but the engine's instrumentation, which
    the document names beside it), and nothing from fast/, parallel/, workbook/ or tools/ is."""
    listed = {path for path, _ in reading_order()}
    instrumentation = {"nanoinfer/engine/events.py", "nanoinfer/engine/metrics.py"}
    text = (ROOT / "docs" / "reading_order.md").read_text()
    assert all(f"`{path}`" in text for path in instrumentation)
    core_dirs = ("nanoinfer/engine/", "nanoinfer/models/", "nanoinfer/layers/")
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel in instrumentation:
            continue
        if rel.startswith(core_dirs) and path.name != "__init__.py" or rel == "nanoinfer/models/__init__.py":
            assert rel in listed, f"{rel} is part of the core but not in docs/reading_order.md"
    for rel in listed:
        assert not rel.startswith(("nanoinfer/fast/", "nanoinfer/parallel/", "nanoinfer/workbook/",
                                   "nanoinfer/tools/")), f"{rel} is not core: it lives beside the engine"


def test_readme_knob_table_is_the_config():
    """README's knob table lists every field of EngineConfig (but `model`, LLM's first argument) and nothing else."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| knob |"):]
    table = table[: table.index("\n\n")]
    named = {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    knobs = {f.name for f in fields(EngineConfig)} - {"model"}
    assert named == knobs, f"missing from README: {sorted(knobs - named)}; not knobs: {sorted(named - knobs)}"


def test_every_knob_is_documented_on_its_field():
    source = (PACKAGE / "config.py").read_text()
    for f in fields(EngineConfig):
        line = next(ln for ln in source.splitlines() if re.match(rf"\s+{f.name}: ", ln))
        assert "#" in line, f"EngineConfig.{f.name} has no comment saying what it does"
