"""ONNX export (docs/export.md): a real learner trained on a synthetic stream,
checkpointed as the daemon lays its state out, exported, and run in onnxruntime."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from prometheus_client import CollectorRegistry

from checkpoint_states import state_of
from stream_learner import __version__, synth
from stream_learner.checkpoint import CheckpointStore
from stream_learner.cli import main
from stream_learner.config import ExportSettings, Settings
from stream_learner.events import EventDecoder
from stream_learner.export.periodic import PeriodicExporter
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics

STREAM = "agrawal"          # unscaled features (salaries ~1e5): the standardiser matters
TRAIN, EVAL = 4000, 3000
NAMES = ("reject", "accept")  # string labels, so the label metadata is more than indices
SETTINGS = {"kafka": {"bootstrap_servers": "localhost:1"},
            "model": {"device": "cpu", "hidden": (32, 16), "step_size": 64,
                      "max_step_size": 64},
            "probes": {"per_class": 0}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Learner, Path]:
    s = Settings(**SETTINGS)
    learner = Learner(s)
    x, y = synth.take(STREAM, TRAIN, seed=1, drift_every=2000)
    for i in range(0, TRAIN, 64):
        labels = [NAMES[int(v)] for v in y[i:i + 64]]
        learner.observe(learner.to_tensor(x[i:i + 64]), learner.encode_labels(labels))
    decoder = EventDecoder(None, synth.feature_names(STREAM), s.kafka.max_event_bytes)
    store = CheckpointStore(tmp_path_factory.mktemp("ckpt"))
    store.save(state_of(s, learner, decoder, TRAIN))
    # The daemon's predictions come from a learner restored from that checkpoint.
    restored = Learner(s)
    restored.load_state_dict(store.load_latest()["learner"])  # type: ignore[index]
    return restored, store.directory


def _export(ckpt: Path, out: Path, *extra: str) -> int:
    return main(["export", "--checkpoint", str(ckpt), "--out", str(out), *extra])


def test_onnx_agrees_with_the_daemon(trained: tuple[Learner, Path], tmp_path: Path) -> None:
    learner, ckpt = trained
    assert _export(ckpt, tmp_path) == 0
    x, _ = synth.take(STREAM, TRAIN + EVAL, seed=2, drift_every=2000)
    x = x[TRAIN:]
    assert x.shape == (EVAL, synth.dim(STREAM))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    proba, index = session.run(["probabilities", "label_index"], {"features": x})
    idx, p = learner.predict_indices(learner.to_tensor(x))
    assert learner.model is not None
    with torch.inference_mode():
        want = torch.softmax(learner.model(learner.to_tensor(x)), dim=1).numpy()
    assert index.dtype == np.int64 and index.shape == (EVAL,)
    assert proba.shape == (EVAL, len(NAMES))
    assert (index == idx.numpy()).sum() == EVAL
    # Both classes occur, so agreement is more than a constant prediction.
    assert set(index.tolist()) == {0, 1}
    delta = float(np.abs(proba - want).max())
    print(f"max |dp| over {EVAL} events x {len(NAMES)} classes: {delta:.3g}")
    assert delta <= 1e-5
    assert float(np.abs(proba.max(axis=1) - p.numpy()).max()) <= 1e-5
    labels = json.loads((tmp_path / "labels.json").read_text())
    # Class order is order of first appearance in the stream, as the daemon's LabelMap.
    assert labels == learner.labels.labels and sorted(labels) == sorted(NAMES)


def test_metadata_round_trips(trained: tuple[Learner, Path], tmp_path: Path) -> None:
    learner, ckpt = trained
    assert _export(ckpt, tmp_path) == 0
    model = onnx.load(str(tmp_path / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    newest = CheckpointStore(ckpt).paths()[-1].name
    assert meta == {"stream_learner.labels": json.dumps(learner.labels.labels),
                    "stream_learner.feature_names": json.dumps(synth.feature_names(STREAM)),
                    "stream_learner.events_learned": str(TRAIN),
                    "stream_learner.checkpoint": newest,
                    "stream_learner.checkpoint_version": "test",
                    "stream_learner.version": __version__}
    assert learner.seen == TRAIN
    assert model.opset_import[0].version == 17


def test_triton_layout_matches_the_graph(trained: tuple[Learner, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    assert _export(ckpt, tmp_path, "--layout", "triton", "--name", "credit",
                   "--version", "7") == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) \
        == ["credit/7/model.onnx", "credit/config.pbtxt"]
    config = (tmp_path / "credit" / "config.pbtxt").read_text()
    graph = onnx.load(str(tmp_path / "credit" / "7" / "model.onnx")).graph
    assert re.search(r'^name: "credit"$', config, re.M)
    assert re.search(r'^platform: "onnxruntime_onnx"$', config, re.M)
    assert re.search(r"^max_batch_size: \d+$", config, re.M)
    declared = dict(re.findall(r'name: "(\w+)" data_type: \w+ dims: \[ (\d+) \]', config))
    graph_dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
                  for v in [*graph.input, *graph.output]}
    assert graph_dims == {"features": ["N", synth.dim(STREAM)],
                          "probabilities": ["N", len(NAMES)], "label_index": ["N"]}
    # Triton's dims leave out the batch dimension; label_index's [1] is reshaped to [].
    assert declared == {"features": str(synth.dim(STREAM)),
                        "probabilities": str(len(NAMES)), "label_index": "1"}


def test_export_is_deterministic(trained: tuple[Learner, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    assert _export(ckpt, tmp_path / "a") == 0
    assert _export(ckpt, tmp_path / "b") == 0
    assert (tmp_path / "a" / "model.onnx").read_bytes() == \
        (tmp_path / "b" / "model.onnx").read_bytes()


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_corrupt_checkpoint_is_one_line_exit_2(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "ckpt" / "ckpt-000000000001.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    target = bad if kind == "file" else bad.parent
    proc = subprocess.run([sys.executable, "-m", "stream_learner", "export", "--checkpoint",
                           str(target), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines()
             if ln.startswith("stream-learner: error:")]
    # The directory case also logs the skipped file (one WARNING line, like the daemon).
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert ("is not a valid checkpoint" if kind == "file" else "no valid checkpoint") in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["plain", "triton"])
def test_periodic_export_versions_and_prunes(trained: tuple[Learner, Path], tmp_path: Path,
                                             layout: str) -> None:
    _, ckpt = trained
    metrics = Metrics(CollectorRegistry())
    settings = ExportSettings(every_seconds=1e-9, dir=tmp_path, layout=layout, name="m", keep=2)
    exporter = PeriodicExporter(settings, metrics.model_exports)
    newest = CheckpointStore(ckpt).paths()[-1]
    for _ in range(4):
        assert exporter.after_checkpoint(newest)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"garbage")
    assert not exporter.after_checkpoint(bad)      # logged and counted, never raised
    root = tmp_path / "m" if layout == "triton" else tmp_path
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["3", "4"]
    for v in ("3", "4"):
        assert (root / v / "model.onnx").is_file()
    assert (root / "config.pbtxt").is_file() == (layout == "triton")
    ok = metrics.registry.get_sample_value("stream_learner_model_exports_total",
                                           {"outcome": "ok"})
    failed = metrics.registry.get_sample_value("stream_learner_model_exports_total",
                                               {"outcome": "failed"})
    assert (ok, failed) == (4.0, 1.0)
    # The next version continues after the newest, even when older ones were pruned.
    assert exporter.after_checkpoint(newest)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["4", "5"]


def test_periodic_export_is_off_by_default() -> None:
    exporter = PeriodicExporter(ExportSettings(), Metrics(CollectorRegistry()).model_exports)
    assert not exporter.due(1e12)


def test_the_core_does_not_import_onnx() -> None:
    code = ("import sys, stream_learner.daemon, stream_learner.cli, "
            "stream_learner.checkpoint_coordinator; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('onnx', 'onnxruntime')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def test_missing_onnx_names_the_extra(trained: tuple[Learner, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, ckpt = trained
    monkeypatch.setitem(sys.modules, "onnx", None)     # None: "import onnx" fails
    for name in ("stream_learner.export.layout", "stream_learner.export.graph"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert _export(ckpt, tmp_path) == 2
    err = capsys.readouterr().err
    assert err == ("stream-learner: error: export needs onnx: pip install "
                   "'stream-learner[export]' (onnx is missing)\n")
