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


def _own_private_names() -> set[str]:
    """Private names this package defines: methods, ``self._x =`` attributes, class fields."""
    names: set[str] = set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and ast.unparse(node.value) == "self":
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


# river's ADWIN has no public "update many, tell me where": the batch path drives its
# helper directly (drift/detectors.py, tested against river's own update in test_drift).
THIRD_PARTY = {"drift/detectors.py: detector._reset", "drift/detectors.py: detector._helper",
               "drift/detectors.py: detector._drift_detected"}


def test_no_module_reads_another_objects_private_members() -> None:
    """``obj._x`` on anything but ``self``/``cls``/``super()`` reaches into another class's
    internals; third-party internals (river's detectors, torch's _foreach) are not ours to
    rename, so only names this package defines count."""
    own = _own_private_names()
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in own:
                base = ast.unparse(node.value)
                where = f"{_rel(path)}: {base}.{node.attr}"
                if base not in ("self", "cls") and not base.startswith("super()") \
                        and where not in THIRD_PARTY:
                    found.append(f"{where} (line {node.lineno})")
    assert found == []
