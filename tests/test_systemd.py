"""deploy/systemd: the unit passes systemd's own checks, and the daemon speaks sd_notify.

The notify test plays systemd's part for real: it binds the datagram socket that
``NOTIFY_SOCKET`` names, runs ``stream-learner run`` against the embedded broker, and
reads READY, WATCHDOG, STATUS and STOPPING as systemd would.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_learner.cli import build_parser
from stream_learner.config import describe_settings, load_settings
from stream_learner.synth import ensure_topics, produce
from stream_learner.systemd import Notifier

from conftest import (ROOT, DaemonProcess, checkpoint_offsets_sum, latest_checkpoint,
                      learner_worker_pid, require_tool, unique)

UNIT_DIR = ROOT / "deploy" / "systemd"
UNIT = UNIT_DIR / "stream-learner.service"
INSTALLED_BIN = "/opt/stream-learner/bin/stream-learner"


def _systemd_analyze() -> str:
    return require_tool("systemd-analyze", "apt-get install systemd")


def _unit_with_local_binary(tmp_path: Path) -> Path:
    """The unit as shipped, except ExecStart's binary: verify checks that it exists."""
    local = Path(sys.executable).with_name("stream-learner")
    assert local.exists(), local
    text = UNIT.read_text()
    assert INSTALLED_BIN in text
    out = tmp_path / UNIT.name
    out.write_text(text.replace(INSTALLED_BIN, str(local)))
    return out


def _service_section() -> dict[str, list[str]]:
    """[Service] key -> every value (systemd allows repeated keys)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_with_local_binary(tmp_path)
    res = subprocess.run([_systemd_analyze(), "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys; it only warns. Any output is a finding.
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


def test_gpu_drop_in_passes_verify(tmp_path: Path) -> None:
    unit = _unit_with_local_binary(tmp_path)
    drop_ins = tmp_path / "stream-learner.service.d"
    drop_ins.mkdir()
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}

    def verify() -> str:
        res = subprocess.run([_systemd_analyze(), "verify", "--man=no", str(unit)],
                             capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        return (res.stdout + res.stderr).strip()

    # First prove verify reads drop-ins from there at all: a bad one must be reported.
    (drop_ins / "bogus.conf").write_text("[Service]\nNoSuchKey=1\n")
    assert "NoSuchKey" in verify()
    (drop_ins / "bogus.conf").unlink()
    shutil.copy(UNIT_DIR / "gpu.conf", drop_ins / "gpu.conf")
    assert verify() == ""


def test_unit_hardening_is_rated_ok_by_systemd(tmp_path: Path) -> None:
    unit = _unit_with_local_binary(tmp_path)
    res = subprocess.run([_systemd_analyze(), "security", "--offline=yes", "--no-pager",
                          str(unit)], capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", res.stdout)
    assert found, res.stdout + res.stderr
    # systemd's scale: 0-10, "OK" below 2.0 ("EXPOSED" at 5+, "UNSAFE" at 9+).
    assert float(found.group(1)) < 2.0, res.stdout


def test_unit_settings_operators_rely_on() -> None:
    svc = _service_section()
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["Restart"] == "on-failure"
    assert one["DynamicUser"] == "yes" and one["StateDirectory"] == "stream-learner"
    assert one["EnvironmentFile"].lstrip("-") == "/etc/stream-learner/stream-learner.env"
    # The watchdog must be slower than the loop's own stall limit's half (pings at half).
    assert int(one["WatchdogSec"].rstrip("s")) >= 30
    # The stop timeout covers the final checkpoint: producer flush (30 s) + write + commit.
    assert int(one["TimeoutStopSec"].rstrip("s")) >= 60
    exec_start = one["ExecStart"].split()
    assert exec_start[0] == INSTALLED_BIN
    args = build_parser().parse_args(exec_start[1:])
    assert args.command == "run"
    assert str(args.config).startswith("/etc/" + one["ConfigurationDirectory"] + "/")


def test_example_config_and_env_file_are_real_settings(tmp_path: Path) -> None:
    settings = load_settings(UNIT_DIR / "config.yaml")
    assert settings.metrics.port == 9108
    known = {env for _, env, _, _ in describe_settings()}
    env_file = configparser.ConfigParser(strict=True)
    env_file.optionxform = str   # type: ignore[assignment,method-assign]
    env_file.read_string("[env]\n" + (UNIT_DIR / "stream-learner.env").read_text())
    assert env_file["env"], "no variables in stream-learner.env"
    for name in env_file["env"]:
        assert name in known, f"{name} is not a setting"
    gpu = (UNIT_DIR / "gpu.conf").read_text()
    for name in re.findall(r"Environment=(STREAM_LEARNER_\w+)=", gpu):
        assert name in known, f"{name} is not a setting"


# -- sd_notify ---------------------------------------------------------------------------
def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def _read(sock: socket.socket, into: list[str], until: str, timeout: float,
          daemon: DaemonProcess | None = None) -> None:
    """Append every message field to ``into`` until one equals ``until``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fields = sock.recv(4096).decode().split("\n")
        except socket.timeout:
            if daemon is not None and daemon.proc.poll() is not None and until not in into:
                break
            continue
        into.extend(fields)
        if until in fields:
            return
    raise AssertionError(f"no {until} within {timeout:.0f}s; got {into}")


def test_daemon_notifies_ready_watchdog_stopping_and_exits_0(broker, daemons,
                                                             tmp_path: Path) -> None:
    bs = broker.bootstrap_servers
    topic, group, n = unique("sdnotify"), unique("g"), 3000
    ensure_topics(bs, {topic: 2, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    produce(bs, topic, "sea", n)
    sock = _listen(tmp_path / "notify")
    state = tmp_path / "state"
    state.mkdir()
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000",
           "STATE_DIRECTORY": str(state)}   # no checkpoint.dir: it must default to this
    d = DaemonProcess(bs, None, topic, group, extra_env=env, log_path=tmp_path / "daemon.log")
    daemons.append(d)
    seen: list[str] = []
    try:
        _read(sock, seen, "READY=1", 120, d)
        assert d.metric("stream_learner_ready") == 1, "READY before the assignment"
        ready_at = len(seen)
        d.wait_consumed(n)
        # Pings every 0.5 s (half of WATCHDOG_USEC), from the loop, also while idle.
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            try:
                seen.extend(sock.recv(4096).decode().split("\n"))
            except socket.timeout:
                pass
        assert seen[ready_at:].count("WATCHDOG=1") >= 4, seen
        assert any(f.startswith("STATUS=") and "events learned" in f for f in seen), seen
        d.proc.send_signal(signal.SIGTERM)
        _read(sock, seen, "STOPPING=1", 60, d)
        assert d.proc.wait(60) == 0, d.log_path.read_text()[-2000:]
    finally:
        sock.close()
    ckpt = latest_checkpoint(state)
    assert checkpoint_offsets_sum(ckpt) == n
    assert ckpt["counters"]["consumed"] == n
    assert seen.index("READY=1") < seen.index("STOPPING=1")


def _collect(sock: socket.socket, seconds: float) -> list[str]:
    fields: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            fields.extend(sock.recv(4096).decode().split("\n"))
        except socket.timeout:
            pass
    return fields


def test_a_stuck_learner_stops_the_watchdog_pings(broker, daemons, tmp_path: Path) -> None:
    """The pings come from loop progress, not a timer: a hung learner silences them."""
    bs = broker.bootstrap_servers
    topic, group = unique("sdstuck"), unique("g")
    ensure_topics(bs, {topic: 1, f"{topic}.dlq": 1, f"{topic}.predictions": 1})
    produce(bs, topic, "sea", 1000)
    sock = _listen(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    d = DaemonProcess(bs, tmp_path / "ckpt", topic, group, extra_env=env)
    daemons.append(d)
    worker = None
    try:
        _read(sock, [], "READY=1", 120, d)
        d.wait_consumed(1000)
        worker = learner_worker_pid(d.proc.pid)
        os.kill(worker, signal.SIGSTOP)      # a learner stuck in a kernel, say
        produce(bs, topic, "sea", 6000)      # the loop blocks once 2 batches are in flight
        time.sleep(2.0)
        _collect(sock, 0.5)                   # what was queued before the loop blocked
        assert "WATCHDOG=1" not in _collect(sock, 3.0), "pings while the loop was stuck"
        os.kill(worker, signal.SIGCONT)
        assert _collect(sock, 2.0).count("WATCHDOG=1") >= 2, "no pings after recovery"
        d.wait_consumed(7000)
    finally:
        if worker is not None:
            os.kill(worker, signal.SIGCONT)
        sock.close()
    assert d.terminate() == 0


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready("x") and not n.watchdog() and not n.stopping()


def test_watchdog_is_rate_limited_and_only_for_the_watched_pid(tmp_path: Path) -> None:
    sock = _listen(tmp_path / "s")
    try:
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "s"), "WATCHDOG_USEC": "10000000"})
        assert n.watchdog_interval_s == 5.0
        assert n.watchdog(now=100.0) and not n.watchdog(now=104.9) and n.watchdog(now=105.0)
        assert sock.recv(64) == b"WATCHDOG=1" and sock.recv(64) == b"WATCHDOG=1"
        other = Notifier({"NOTIFY_SOCKET": str(tmp_path / "s"), "WATCHDOG_USEC": "10000000",
                          "WATCHDOG_PID": str(os.getpid() + 1)})
        assert other.watchdog_interval_s is None and not other.watchdog(now=1.0)
    finally:
        sock.close()


def test_abstract_socket_and_a_vanished_listener(tmp_path: Path) -> None:
    name = unique("stream-learner-test")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("abstract")
        assert sock.recv(64) == b"READY=1\nSTATUS=abstract"
    finally:
        sock.close()
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.enabled and not gone.status("systemd went away")   # logged once, not raised


def test_checkpoint_dir_defaults_to_state_directory(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    monkeypatch.delenv("STREAM_LEARNER_CHECKPOINT__DIR", raising=False)
    assert load_settings().checkpoint.dir == tmp_path / "a"
    monkeypatch.setenv("STREAM_LEARNER_CHECKPOINT__DIR", str(tmp_path / "explicit"))
    assert load_settings().checkpoint.dir == tmp_path / "explicit"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.delenv("STREAM_LEARNER_CHECKPOINT__DIR")
    assert load_settings().checkpoint.dir == Path("checkpoints")
