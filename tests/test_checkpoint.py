"""Tests for stream_learner.checkpoint.CheckpointStore."""

from __future__ import annotations

import logging

import pytest
import torch

from stream_learner.checkpoint import FORMAT_VERSION, CheckpointStore


def _state(n: int) -> dict:
    return {"n": n, "w": torch.full((3, 2), float(n)), "names": ["a", "b"], "opt": None,
            "nested": {"lr": 0.5, "ids": [1, 2, 3]}}


def _names(store: CheckpointStore) -> list[str]:
    return [p.name for p in store.paths()]


def test_empty_directory_loads_none(tmp_path):
    store = CheckpointStore(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir()
    assert store.paths() == []
    assert store.load_latest() is None


def test_keep_k_rotation(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for n in range(1, 8):
        path = store.save(_state(n))
        assert path.exists()
        assert len(store.paths()) == min(n, 3)
    assert _names(store) == [f"ckpt-{i:012d}.pt" for i in (5, 6, 7)]
    assert store.load_latest()["n"] == 7


def test_keep_one(tmp_path):
    store = CheckpointStore(tmp_path, keep=1)
    for n in range(1, 4):
        store.save(_state(n))
    assert _names(store) == ["ckpt-000000000003.pt"]


def test_save_is_atomic_no_tmp_left(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for n in range(5):
        store.save(_state(n))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in _names(store)]
    assert leftovers == []
    assert not list(tmp_path.glob("*.tmp"))


def test_stray_files_are_ignored(tmp_path):
    (tmp_path / "ckpt-000000000099.pt.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "ckpt-12.pt").write_bytes(b"wrong name")
    store = CheckpointStore(tmp_path)
    assert store.paths() == []
    assert store.load_latest() is None
    store.save(_state(1))
    assert _names(store) == ["ckpt-000000000001.pt"]


def test_round_trip_values(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_state(4))
    got = store.load_latest()
    assert got["n"] == 4 and got["names"] == ["a", "b"] and got["opt"] is None
    assert got["nested"] == {"lr": 0.5, "ids": [1, 2, 3]}
    assert torch.equal(got["w"], torch.full((3, 2), 4.0))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_newest_falls_back_to_previous(tmp_path, damage, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    for n in (1, 2, 3):
        store.save(_state(n))
    newest = store.paths()[-1]
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        newest.write_bytes(b"\x00garbage\xff" * 100)
    else:
        newest.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="stream_learner.checkpoint"):
        got = store.load_latest()
    assert got is not None and got["n"] == 2
    assert newest.name in caplog.text


def test_unknown_format_falls_back(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_state(1))
    path = store.save(_state(2))
    torch.save({"format": FORMAT_VERSION + 1, "state": _state(99)}, path)
    assert store.load_latest()["n"] == 1


def test_all_corrupt_gives_none(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for n in (1, 2, 3):
        store.save(_state(n))
    for path in store.paths():
        path.write_bytes(path.read_bytes()[:10])
    assert store.load_latest() is None


def test_file_loads_with_weights_only(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.save(_state(5))
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert blob["format"] == FORMAT_VERSION
    assert blob["state"]["n"] == 5
    assert torch.equal(blob["state"]["w"], torch.full((3, 2), 5.0))


def test_sequence_continues_after_reopening(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for n in (1, 2, 3):
        store.save(_state(n))
    reopened = CheckpointStore(tmp_path, keep=2)
    assert reopened.load_latest()["n"] == 3
    path = reopened.save(_state(4))
    assert path.name == "ckpt-000000000004.pt"
    assert _names(reopened) == ["ckpt-000000000003.pt", "ckpt-000000000004.pt"]
    assert reopened.load_latest()["n"] == 4
    # ...and a store reopened with a smaller keep prunes on its next save.
    small = CheckpointStore(tmp_path, keep=1)
    small.save(_state(5))
    assert _names(small) == ["ckpt-000000000005.pt"]


def test_sequence_continues_past_a_corrupt_newest(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(_state(1))
    bad = store.save(_state(2))
    bad.write_bytes(b"junk")
    reopened = CheckpointStore(tmp_path, keep=3)
    assert reopened.load_latest()["n"] == 1
    assert reopened.save(_state(3)).name == "ckpt-000000000003.pt"   # never overwrites
    assert reopened.load_latest()["n"] == 3
