"""Benchmarks behind ``stream-learner bench NAME``: each prints a table and writes JSON.

``run_benchmark`` is what the CLI calls; keyword ``options`` go to the benchmark
(the tests use them to shrink a run), so the CLI surface stays ``--out``/``--quick`` (and ``--seeds`` for drift).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BENCHMARKS = ("throughput", "continual", "drift", "federation")


def run_benchmark(name: str, out: Path | str | None = None, quick: bool = False,
                  **options: Any) -> int:
    """Run benchmark ``name``; returns the process exit code (0 when it completed)."""
    if name == "throughput":
        from .throughput import main
        return main(out=Path(out) if out is not None else None, quick=quick, **options)
    if name == "continual":
        from .continual import main as continual_main
        return continual_main(out=Path(out) if out is not None else None, quick=quick, **options)
    if name == "drift":
        from .drift import main as drift_main
        return drift_main(out=Path(out) if out is not None else None, quick=quick, **options)
    if name == "federation":
        from .federation import main as federation_main
        return federation_main(out=Path(out) if out is not None else None, quick=quick,
                               **options)
    raise ValueError(f"unknown benchmark {name!r}; choose one of {list(BENCHMARKS)}")


__all__ = ["BENCHMARKS", "run_benchmark"]
