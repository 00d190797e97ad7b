"""What every benchmark shares: option parsing, progress lines, machine facts, output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ENV_PREFIX = "STREAM_LEARNER_BENCH_"

ADAPT_OFF = {"adapt": {"boost": False, "pool": False, "consolidate": False}}
"""Settings sections: drift detectors still run, no adaptation policy acts."""
DRIFT_OFF = {"drift": {"detector": "none", "loss_detector": "none", "input_detector": "none"},
             **ADAPT_OFF}
"""Settings sections: no drift detection and no adaptation at all."""


def apply_options(cfg: Any, overrides: dict[str, Any], label: str,
                  str_tuples: tuple[str, ...] = ()) -> Any:
    """Set dataclass ``cfg``'s fields from ``overrides``, then ``STREAM_LEARNER_BENCH_*``.

    Keyword overrides win over the environment.  Tuple fields take comma-separated
    strings (ints, or strings for the names in ``str_tuples``).
    """
    fields = type(cfg).__dataclass_fields__
    for name in fields:
        env = os.environ.get(ENV_PREFIX + name.upper())
        if env is not None and name not in overrides:
            overrides[name] = env
    for name, value in overrides.items():
        if name not in fields:
            raise TypeError(f"unknown {label} benchmark option {name!r}")
        current = getattr(cfg, name)
        if isinstance(current, tuple):
            parts = value.split(",") if isinstance(value, str) else value
            parts = [str(v).strip() for v in parts if str(v).strip()]
            value = tuple(parts) if name in str_tuples else tuple(int(v) for v in parts)
        elif isinstance(current, int):
            value = int(float(value)) if isinstance(value, str) else int(value)
        elif isinstance(current, float):
            value = float(value)
        setattr(cfg, name, value)
    return cfg


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


_STARTED: dict[str, Any] = {}
"""Set by :func:`machine_info` (each benchmark calls it as its run begins): the commit
is read then, so a commit made while a long run goes on is not credited with it."""


def machine_info() -> dict[str, Any]:
    _STARTED.update(_source_state())
    import kafka
    import numpy as np
    import river
    import torch

    from ..model import select_device

    device = select_device("auto")
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "numpy": np.__version__,
        "river": river.__version__,
        "kafka_python": kafka.__version__,
    }
    try:
        import crc32c  # noqa: F401
        info["crc32c"] = True
    except ImportError:
        info["crc32c"] = False
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def provenance(quick: bool) -> dict[str, Any]:
    """When and from which code a run's JSON was written, so a rendered table can say so.

    The git fields are ``None`` outside a checkout (an installed package): a run is
    still written, it just cannot name its commit.
    """
    state = dict(_STARTED) or _source_state()
    return {
        "started_utc": state["started_utc"],
        "written_utc": _utc_now(),
        "git_commit": state["git_commit"],
        # A run from uncommitted code cannot be reproduced from the commit alone.
        "git_dirty": state["git_dirty"],
        "quick": quick,
        "argv": sys.argv[1:],
    }


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _source_state() -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"started_utc": _utc_now(), "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": None if status is None else bool(status)}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def write_and_report(results: dict[str, Any], out: Path, quick: bool,
                     report: Callable[[dict[str, Any], Path], None]) -> int:
    """Write the JSON (config marked quick or not, provenance added), print the report.

    Returns exit code 0.  ``provenance`` is a new top-level key: readers of older JSON
    (without it) still find ``config.quick`` and ``machine`` where they were.
    """
    results["config"]["quick"] = quick
    results.setdefault("provenance", provenance(quick))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    report(results, out)
    return 0
