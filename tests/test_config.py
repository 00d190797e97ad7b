"""Tests for stream_learner.config and the settings side of the `stream-learner` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from stream_learner.config import ENV_PREFIX, Settings, describe_settings, load_settings

CLI = Path(sys.executable).with_name("stream-learner")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


YAML = """\
kafka:
  bootstrap_servers: "broker-a:9092,broker-b:9092"
  topic: from-yaml
  auto_offset_reset: latest
batch:
  size: 77
model:
  hidden: [16, 8]
  device: cpu
  lr: 0.02
strategy:
  name: naive
replay:
  capacity: 500
checkpoint:
  dir: /tmp/ckpts-from-yaml
  keep: 5
"""


def test_defaults():
    s = load_settings()
    assert s.kafka.bootstrap_servers is None
    assert s.kafka.topic == "events"
    assert s.model.hidden == (64, 64)
    assert s.strategy.name == "replay"


def test_yaml_values_load(tmp_path):
    s = load_settings(_write(tmp_path, YAML))
    assert isinstance(s, Settings)
    assert s.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert s.kafka.topic == "from-yaml"
    assert s.kafka.auto_offset_reset == "latest"
    assert s.kafka.group_id == "stream-learner"          # untouched default in a given section
    assert s.batch.size == 77
    assert s.model.hidden == (16, 8)
    assert s.model.device == "cpu"
    assert s.model.lr == 0.02
    assert s.strategy.name == "naive"
    assert s.replay.capacity == 500
    assert s.checkpoint.dir == Path("/tmp/ckpts-from-yaml")
    assert s.checkpoint.keep == 5
    assert s.metrics.port == 9108                        # whole section absent: defaults


def _env(section: str, name: str) -> str:
    """The variable name, derived the way the settings object derives it."""
    return f"{ENV_PREFIX}{section.upper()}__{name.upper()}"


TOPIC_VAR = _env("kafka", "topic")
SERVERS_VAR = _env("kafka", "bootstrap_servers")


def test_env_overrides_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv(TOPIC_VAR, "from-env")
    s = load_settings(_write(tmp_path, YAML))
    assert s.kafka.topic == "from-env"
    # Other YAML values of the same section survive the env override.
    assert s.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert s.kafka.auto_offset_reset == "latest"


def test_keyword_overrides_win_over_env_and_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv(_env("batch", "size"), "11")
    s = load_settings(_write(tmp_path, YAML), batch={"size": 3})
    assert s.batch.size == 3


def test_env_without_file(monkeypatch):
    monkeypatch.setenv(SERVERS_VAR, "h:1")
    monkeypatch.setenv(_env("batch", "max_wait_ms"), "250")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "h:1"
    assert s.batch.max_wait_ms == 250


def test_nested_tuple_env(monkeypatch, tmp_path):
    monkeypatch.setenv(_env("model", "hidden"), "[32, 16]")
    assert load_settings().model.hidden == (32, 16)
    assert load_settings(_write(tmp_path, YAML)).model.hidden == (32, 16)


def test_invalid_env_value_raises(monkeypatch):
    monkeypatch.setenv(_env("batch", "size"), "0")
    with pytest.raises(ValidationError):
        load_settings()


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.batch = s.batch               # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.kafka.topic = "other"         # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.model.hidden = (1,)           # type: ignore[misc]
    assert s.kafka.topic == "events"


def test_frozen_after_load_from_file(tmp_path):
    s = load_settings(_write(tmp_path, YAML))
    with pytest.raises(ValidationError):
        s.kafka.topic = "other"         # type: ignore[misc]


@pytest.mark.parametrize("text", [
    "kafak:\n  topic: typo\n",                      # unknown section
    "kafka:\n  topik: typo\n",                      # unknown key in a section
    "model:\n  hidden: [8]\n  dropout: 0.5\n",
])
def test_unknown_yaml_keys_raise(tmp_path, text):
    with pytest.raises(ValidationError):
        load_settings(_write(tmp_path, text))


def test_invalid_yaml_value_raises(tmp_path):
    with pytest.raises(ValidationError):
        load_settings(_write(tmp_path, "strategy:\n  name: ewc\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.yaml")


def test_describe_settings_covers_every_field():
    rows = list(describe_settings())
    expected = set()
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name in model.model_fields:
            expected.add(f"{section}.{name}")
    dotted = [r[0] for r in rows]
    assert len(dotted) == len(set(dotted))
    assert set(dotted) == expected
    for name, env, default, doc in rows:
        section, field = name.split(".")
        assert env == f"STREAM_LEARNER_{section.upper()}__{field.upper()}"
        assert doc, f"{name} has no description"
        actual = getattr(getattr(Settings(), section), field)
        assert default == (list(actual) if isinstance(actual, tuple) else actual), name


def test_every_described_env_var_works(monkeypatch):
    """The env names --help prints are the ones the settings actually read."""
    samples = {int: "7", str: "x", float: "2.5"}
    for name, env, default, _doc in describe_settings():
        section, field = name.split(".")
        if type(default) in samples and not isinstance(default, bool):
            value = samples[type(default)]
            monkeypatch.setenv(env, value)
            try:
                got = getattr(getattr(Settings(), section), field)
            except ValidationError:
                continue     # a constrained field (Literal, ge=...): covered elsewhere
            finally:
                monkeypatch.delenv(env)
            assert str(got) == value or float(got) == float(value), name


def test_run_help_mentions_every_env_var(tmp_path):
    proc = subprocess.run([str(CLI), "run", "--help"], capture_output=True, text=True,
                          env=_clean_environ(), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name, env, _default, _doc in describe_settings():
        assert env in proc.stdout, env
        assert name in proc.stdout, name


def test_run_without_bootstrap_servers_fails_with_one_line(tmp_path):
    proc = subprocess.run([str(CLI), "run"], capture_output=True, text=True,
                          env=_clean_environ(), cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "bootstrap" in lines[0].lower()
    assert proc.stdout == ""


def test_run_with_bad_config_fails_with_one_line(tmp_path):
    cfg = _write(tmp_path, "kafka:\n  bootstrap_servers: h:1\n  topik: x\nbatch:\n  size: 0\n")
    proc = subprocess.run([str(CLI), "run", "--config", str(cfg)], capture_output=True,
                          text=True, env=_clean_environ(), cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "topik" in proc.stderr and "batch.size" in proc.stderr


def test_bad_drift_detector_params_fail_at_start_with_one_line(tmp_path):
    cfg = _write(tmp_path, "kafka:\n  bootstrap_servers: h:1\n"
                           "drift:\n  detector: adwin\n  detector_params: {deltaa: 0.001}\n")
    proc = subprocess.run([str(CLI), "run", "--config", str(cfg)], capture_output=True,
                          text=True, env=_clean_environ(), cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "detector_params" in proc.stderr and "deltaa" in proc.stderr
    ok = Settings(drift={"detector": "page_hinkley", "detector_params": {"threshold": 20}})
    assert ok.drift.detector_params == {"threshold": 20}
