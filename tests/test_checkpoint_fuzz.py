"""Fuzzing the checkpoint loader: a damaged or hostile file never gets past it.

A real daemon state (tests/checkpoint_states.py) is saved, then the newest file's bytes
are flipped, truncated or extended, or a nested value of the state is replaced by a wrong
type, a NaN tensor, a tensor of another shape or dtype, a huge list, or removed.
``CheckpointStore.load_latest`` with the daemon's trial restore must then return either
the older, intact checkpoint or a state that restores into a learner with finite
weights, and raise nothing.  Fast by default; ``-m slow`` runs many more examples."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream_learner.checkpoint import CheckpointStore
from stream_learner.learner import Learner
from stream_learner.restore_check import check_restorable

from checkpoint_states import daemon_state, settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = hsettings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])
SLOW = hsettings(max_examples=600, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])

GOOD = daemon_state()     # ~1 s at collection; every example copies it
VALIDATE = functools.partial(check_restorable, settings())


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value in the nested state."""
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


PATHS = sorted(_paths(GOOD), key=repr)


def _fresh_store(tmp: Path) -> tuple[CheckpointStore, Path]:
    for p in tmp.glob("ckpt-*"):
        p.unlink()
    store = CheckpointStore(tmp, keep=5)
    store.save(GOOD)
    return store, store.save(GOOD)


def _check_outcome(store: CheckpointStore) -> None:
    """Restored from the intact older file, or from the damaged one only if it restores."""
    state = store.load_latest(validate=VALIDATE)
    assert state is not None, "the intact older checkpoint was not found"
    learner = Learner(settings())
    learner.load_state_dict(state["learner"])
    assert learner.model is not None
    for name, t in learner.model.state_dict().items():
        assert not t.is_floating_point() or bool(torch.isfinite(t).all()), name


def _replacement(value: Any) -> st.SearchStrategy[Any]:
    wrong = st.sampled_from([None, "x", -1, 2**70, math.nan, math.inf, True, [], {},
                             {"__reduce__": "os.system"}, [0.0] * 100_000])
    if not torch.is_tensor(value):
        return wrong
    if value.is_floating_point():
        extreme = torch.full_like(value, math.nan)
    elif value.dtype == torch.bool:
        extreme = torch.ones_like(value)
    else:
        extreme = torch.full_like(value, torch.iinfo(value.dtype).min)
    shaped = [extreme,
              torch.zeros((3, 7)), torch.zeros(10**6), value.to(torch.float16),
              value.flatten()[:1].clone(), torch.zeros(0, dtype=value.dtype)]
    return st.one_of(wrong, st.sampled_from(shaped))


def _set(state: dict[str, Any], path: tuple, value: Any, delete: bool) -> None:
    node: Any = state
    for k in path[:-1]:
        node = node[k]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value


def _nested_case(data: st.DataObject, tmp: Path) -> None:
    store, newest = _fresh_store(tmp)
    bad = copy.deepcopy(GOOD)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(PATHS))
        try:
            node: Any = bad
            for k in path:
                node = node[k]
        except (KeyError, IndexError, TypeError):
            continue                      # an earlier replacement removed its parent
        _set(bad, path, data.draw(_replacement(node)), data.draw(st.booleans()))
    newest.unlink()
    store._seq -= 1
    store.save(bad)
    _check_outcome(store)


def _bytes_case(data: st.DataObject, tmp: Path) -> None:
    store, newest = _fresh_store(tmp)
    raw = bytearray(newest.read_bytes())
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    newest.write_bytes(bytes(raw))
    _check_outcome(store)


@FAST
@given(data=st.data())
def test_nested_values_replaced(data: st.DataObject, tmp_path: Path) -> None:
    _nested_case(data, tmp_path)


@FAST
@given(data=st.data())
def test_file_bytes_damaged(data: st.DataObject, tmp_path: Path) -> None:
    _bytes_case(data, tmp_path)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_nested_values_replaced_many(data: st.DataObject, tmp_path: Path) -> None:
    _nested_case(data, tmp_path)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_file_bytes_damaged_many(data: st.DataObject, tmp_path: Path) -> None:
    _bytes_case(data, tmp_path)


@pytest.mark.parametrize("where", ["model", "optimizer"])
def test_non_finite_weights_are_never_restored(where: str, tmp_path: Path) -> None:
    store, newest = _fresh_store(tmp_path)
    bad = copy.deepcopy(GOOD)
    if where == "model":
        name = next(k for k, v in bad["learner"]["model"].items() if v.is_floating_point())
        bad["learner"]["model"][name].view(-1)[0] = math.nan
    else:
        moments = next(iter(bad["learner"]["optimizer"]["state"].values()))
        next(v for v in moments.values() if v.dim()).view(-1)[0] = math.inf
    newest.unlink()
    store._seq -= 1
    bad_path = store.save(bad)
    state = store.load_latest(validate=VALIDATE)
    assert state is not None and bad_path.exists()
    assert all(bool(torch.isfinite(v).all()) for v in state["learner"]["model"].values()
               if v.is_floating_point())
