"""House rules on the package's shape (issue 15): small modules and classes, no
capability probes.  Sizes are AST-measured, so a reformat cannot hide a class."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stream_learner"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250

# Pending split: these are being edited by other work and are split later.  Listed so the
# test is green now and fails as soon as anything *else* grows past the bar.
PENDING_MODULES: set[str] = set()
PENDING_CLASSES: set[tuple[str, str]] = set()


def _modules() -> list[Path]:
    # The benchmarks are scripts, not the daemon: outside the bar.
    return sorted(p for p in PACKAGE.rglob("*.py") if "benchmarks" not in p.relative_to(PACKAGE).parts)


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_modules_are_small() -> None:
    big = {_rel(p): n for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert set(big) - PENDING_MODULES == set(), big


def test_classes_are_small() -> None:
    big: dict[tuple[str, str], int] = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                n = node.end_lineno - node.lineno + 1
                if n > MAX_CLASS_LINES:
                    big[(_rel(path), node.name)] = n
    assert set(big) - PENDING_CLASSES == set(), big


PROBE = re.compile(r"getattr\(self\.learner|hasattr\(")


def test_no_capability_probes() -> None:
    found = [f"{_rel(p)}:{i}: {line.strip()}" for p in _modules()
             for i, line in enumerate(p.read_text().splitlines(), 1) if PROBE.search(line)]
    assert found == []


def test_the_pending_lists_are_not_stale() -> None:
    """An entry that no longer needs the exemption must leave the list (else it hides a
    regression later)."""
    sizes = {_rel(p): len(p.read_text().splitlines()) for p in _modules()}
    assert {m for m in PENDING_MODULES if sizes[m] <= MAX_MODULE_LINES} == set()
