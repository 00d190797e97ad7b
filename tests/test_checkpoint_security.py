"""A checkpoint file cannot run code: drift detector state is plain data, never unpickled.

Before, detectors travelled as pickles read by an unpickler that resolved any
``river.*`` global; protocol 4 resolves dotted names, so ``("river.datasets.base",
"os.system")`` is ``os.system`` and a checkpoint ran a shell command when loaded.  Here:
pickles that try ``os.system``, ``builtins.eval`` and ``getattr`` chains, and plain-data
states with wrong types or absurd sizes, are refused without running anything; the store
skips such a file with one log line naming it and the reason and restores the previous
checkpoint, and a real daemon does the same."""

from __future__ import annotations

import copy
import functools
import logging
import pickle
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from stream_learner.checkpoint import CheckpointStore
from stream_learner.config import Settings
from stream_learner.drift import detectors
from stream_learner.drift.monitor import DriftMonitor
from stream_learner.learner import Learner
from stream_learner.restore_check import check_restorable
from stream_learner.synth import ensure_topics, produce

from checkpoint_states import SETTINGS, daemon_state, settings
from conftest import DaemonProcess, latest_checkpoint, unique


def _str(s: str) -> bytes:
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data if len(data) < 256 else \
        b"X" + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return _str(module) + _str(name) + b"\x93"                    # STACK_GLOBAL


def _call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"                   # MARK args TUPLE REDUCE


def _pickle(body: bytes) -> torch.Tensor:
    data = b"\x80\x04" + body + b"."                               # PROTO 4 ... STOP
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def hostile_pickles(marker: Path) -> dict[str, torch.Tensor]:
    cmd = _str(f"touch {marker}")
    return {
        # The dotted-name escape from a "module starts with river." allowlist.
        "dotted os.system": _pickle(_call(_global("river.datasets.base", "os.system"), cmd)),
        "builtins.eval": _pickle(_call(_global("builtins", "eval"),
                                       _str(f"open({str(marker)!r}, 'w')"))),
        # getattr(getattr(river module, "os"), "system")("touch ...")
        "getattr chain": _pickle(_call(
            _call(_global("builtins", "getattr"),
                  _call(_global("builtins", "getattr"),
                        _global("river.datasets", "base"), _str("os")),
                  _str("system")), cmd)),
        "posix.system": _pickle(_call(_global("posix", "system"), cmd)),
        "a real old blob": torch.frombuffer(bytearray(pickle.dumps(detectors.make("adwin"),
                                                                   protocol=4)),
                                            dtype=torch.uint8).clone(),
    }


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


@pytest.fixture(scope="module")
def good_state() -> dict[str, Any]:
    return daemon_state()


def _poisoned(state: dict[str, Any], slot: str, blob: Any) -> dict[str, Any]:
    bad = copy.deepcopy(state)
    monitor = bad["learner"]["drift"]["monitor"]
    if slot == "inputs":
        monitor["inputs"][1] = blob
    else:
        monitor[slot] = blob
    return bad


def _validate() -> Any:
    return functools.partial(check_restorable, settings())


@pytest.mark.parametrize("name", ["dotted os.system", "builtins.eval", "getattr chain",
                                  "posix.system", "a real old blob"])
def test_detector_load_refuses_pickles_unread(name: str, marker: Path) -> None:
    blob = hostile_pickles(marker)[name]
    for det in detectors.NAMES:
        with pytest.raises(ValueError, match="pickle"):
            detectors.load(det, None, blob)
    assert not marker.exists()


@pytest.mark.parametrize("slot", ["error", "loss", "inputs"])
@pytest.mark.parametrize("name", ["dotted os.system", "builtins.eval", "getattr chain"])
def test_store_skips_a_hostile_checkpoint_with_one_line(
        slot: str, name: str, marker: Path, good_state: dict[str, Any], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep=5)
    store.save(good_state)
    bad_path = store.save(_poisoned(good_state, slot, hostile_pickles(marker)[name]))
    caplog.set_level(logging.INFO)
    state = store.load_latest(validate=_validate())
    assert not marker.exists()
    assert state is not None and state["created"] == good_state["created"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert bad_path.name in line and "pickle blob" in line


def _set(path: list[Any], value: Any) -> Any:
    def spoil(state: dict[str, Any]) -> None:
        node = state["learner"]["drift"]["monitor"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return spoil


PLAIN_BAD = {
    "a string for a flag": _set(["error", "state", "_drift_detected"], "yes"),
    "an unknown attribute": _set(["loss", "state", "_test_drift"], "os.system"),
    "a huge ADWIN window": _set(["error", "state", "_helper", "width"], 1e300),
    "64 bucket levels": _set(["error", "state", "_helper", "counts"],
                             torch.ones(64, dtype=torch.int64)),
    "a NaN statistic": _set(["loss", "state", "_helper", "total"], float("nan")),
    "a 10M-entry KSWIN window": _set(["inputs", 0, "state", "window"],
                                     torch.zeros(10_000_000, dtype=torch.float64)),
    "a list window": _set(["inputs", 0, "state", "window"], [0.0] * 50),
    "a broken RNG": _set(["inputs", 0, "state", "_rng", "internal"],
                         torch.full((625,), 2**40, dtype=torch.int64)),
    "a wrong detector": _set(["error", "detector"], "kswin"),
    "too many input detectors": _set(["inputs"], [None] * 1000),
}


@pytest.mark.parametrize("what", sorted(PLAIN_BAD))
def test_store_skips_hostile_plain_data(what: str, good_state: dict[str, Any],
                                        tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep=5)
    store.save(good_state)
    bad = copy.deepcopy(good_state)
    PLAIN_BAD[what](bad)
    bad_path = store.save(bad)
    caplog.set_level(logging.WARNING)
    state = store.load_latest(validate=_validate())
    assert state is not None and state["created"] == good_state["created"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and bad_path.name in lines[0] and "\n" not in lines[0], lines


def test_a_wrong_shape_model_is_one_line_too(good_state: dict[str, Any], tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(tmp_path / "ckpt", keep=5)
    store.save(good_state)
    bad = copy.deepcopy(good_state)
    name = next(iter(bad["learner"]["model"]))
    bad["learner"]["model"][name] = torch.zeros(3, 7)     # torch: a multi-line error
    bad_path = store.save(bad)
    caplog.set_level(logging.WARNING)
    assert store.load_latest(validate=_validate())["created"] == good_state["created"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and bad_path.name in lines[0] and "\n" not in lines[0], lines


def test_legacy_checkpoint_keeps_its_model_and_refreshes_detectors(
        marker: Path, good_state: dict[str, Any], tmp_path: Path,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint from before the plain format (no ``detectors_format``) holds pickle
    blobs; they are not unpickled, the detectors start afresh, everything else restores,
    and one line says so (the trial restore logs it, the real one does not repeat it)."""
    monkeypatch.setattr(DriftMonitor, "_legacy_logged", False)
    caplog.set_level(logging.WARNING)
    legacy = _poisoned(good_state, "error", hostile_pickles(marker)["dotted os.system"])
    monitor = legacy["learner"]["drift"]["monitor"]
    del monitor["detectors_format"]
    monitor["loss"] = hostile_pickles(marker)["a real old blob"]
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(legacy)
    state = store.load_latest(validate=_validate())
    assert state is not None and not marker.exists()
    learner = Learner(settings())
    learner.load_state_dict(state["learner"])
    assert not marker.exists()
    for k, v in good_state["learner"]["model"].items():
        assert torch.equal(learner.model.state_dict()[k], v), k
    mon = learner.drift.monitor
    assert mon.error.width == 0 and mon.loss.n_detections == 0   # fresh, river's own
    assert len(mon.inputs) == 3                                   # plain ones still load
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "old pickle format" in lines[0], lines


def test_changed_detector_parameters_start_the_detector_afresh(
        good_state: dict[str, Any]) -> None:
    """Not corrupt: a config change, as a changed detector name always was."""
    s = settings()
    changed = Settings(**{**SETTINGS, "drift": {**SETTINGS["drift"],
                                                "detector_params": {"delta": 0.01}}})
    learner = Learner(changed)
    check_restorable(changed, good_state)
    learner.load_state_dict(copy.deepcopy(good_state)["learner"])
    assert learner.drift.monitor.error.delta == 0.01
    assert learner.drift.monitor.error.width == 0
    same = Learner(s)
    same.load_state_dict(copy.deepcopy(good_state)["learner"])
    assert same.drift.monitor.error.width > 0


def test_daemon_falls_back_past_a_hostile_checkpoint(broker, daemons, tmp_path: Path,
                                                    marker: Path) -> None:
    """The real process: a newer checkpoint whose detector state is a pickle that runs
    ``touch MARKER`` is skipped with one log line; the daemon resumes from the one before."""
    bs = broker.bootstrap_servers
    topic, group = unique("sec"), unique("g")
    ensure_topics(bs, {topic: 2, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    produce(bs, topic, "sea", 2000)
    ckpt = tmp_path / "ckpt"
    slow = {"STREAM_LEARNER_CHECKPOINT__EVERY_EVENTS": "1000000",
            "STREAM_LEARNER_CHECKPOINT__EVERY_SECONDS": "3600"}
    first = DaemonProcess(bs, ckpt, topic, group, extra_env=slow,
                          log_path=tmp_path / "first.log")
    daemons.append(first)
    first.wait_consumed(2000)
    assert first.terminate() == 0
    good = latest_checkpoint(ckpt)
    assert good["learner"]["drift"]["monitor"]["error"] is not None
    hostile = _poisoned(good, "error", hostile_pickles(marker)["dotted os.system"])
    hostile["offsets"] = {t: {p: 0 for p in parts} for t, parts in good["offsets"].items()}
    bad_path = CheckpointStore(ckpt).save(hostile)

    produce(bs, topic, "sea", 1000, start_id=2000)
    log_path = tmp_path / "second.log"
    second = DaemonProcess(bs, ckpt, topic, group, extra_env=slow, log_path=log_path)
    daemons.append(second)
    second.wait_consumed(1000)
    time.sleep(1.0)    # would reveal a replay from the hostile file's offsets (0)
    assert not marker.exists(), "a checkpoint ran code"
    assert second.metric("stream_learner_events_consumed_total") == 1000
    assert second.terminate() == 0
    lines = [ln for ln in log_path.read_text().splitlines() if bad_path.name in ln]
    assert len(lines) == 1, lines
    assert "pickle blob" in lines[0] and "older" in lines[0]
    assert latest_checkpoint(ckpt)["counters"]["consumed"] == 3000
