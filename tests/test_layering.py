"""Library code imports downwards only: envs → settings → oracle → data → models → training → evaluation → rl
→ results; `cli/` wires them and nothing below it imports `cli/`. Modules at the package root
(`atomic.py`, `errors.py`, `locks.py`) sit below every layer."""
from __future__ import annotations

import ast
from pathlib import Path

import metamanip

LAYERS = ["envs", "settings", "oracle", "data", "models", "training", "evaluation", "rl", "results", "cli"]
ROOT = Path(metamanip.__file__).parent


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        here = rel[0] if len(rel) > 1 else None  # None: a root module, below every layer
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] != "metamanip" or len(parts) < 2 or parts[1] not in LAYERS:
                continue
            if here is None or here not in LAYERS or LAYERS.index(parts[1]) > LAYERS.index(here):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The walker above finds `from metamanip.cli... import` in a file (guards against a vacuous test)."""
    f = tmp_path / "m.py"
    f.write_text("from metamanip.cli.jobstate import job\nimport metamanip.results.tables\n")
    assert [m for m, _ in _imports(f)] == ["metamanip.cli.jobstate", "metamanip.results.tables"]
