"""The Kafka loop's side of label-later events (docs/labels.md).

Per micro-batch: label events (``{"id", "label"}`` and no features; the decoder calls
them missing_features) are taken out of the rejects, features events with an id and no
label are kept in the :class:`~stream_learner.label_join.JoinStore`, and each label
event either joins its waiting features, which the daemon then submits to the learner,
or goes to the DLQ with the join's reason. Also the served accuracy: the prediction as
it was published, scored when its label arrives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .config import Settings
from .evaluation import PrequentialAccuracy
from .event_checks import bad_label
from .events import MISSING_FEATURES, DecodedBatch, Limits, Reject
from .label_join import JOINED, JoinStore, Pending
from .label_metrics import LabelMetrics
from .labels import Label

BAD_LABEL = "bad_label"


@dataclass
class Joined:
    """Label events of one micro-batch that found their features: learned as one batch."""

    x: np.ndarray                                  # [n, n_features] float32, raw
    labels: list[Label]
    records: list[Any]                             # the label events' records
    entries: list[Pending]
    rejects: list[tuple[Any, str, str]] = field(default_factory=list)   # (record, reason, detail)


def label_event(value: bytes | None, lim: Limits) -> tuple[str, Label] | str | None:
    """(id, label) of a label event; a bad_label detail; None when it is no label event
    (it stays missing_features)."""
    try:
        obj = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or "features" in obj:
        return None
    event_id, label = obj.get("id"), obj.get("label")
    if not isinstance(event_id, str) or label is None:
        return None       # no id: nothing to join it to; a null label: nothing to learn
    if lim.max_id_length is not None and len(event_id) > lim.max_id_length:
        return None
    bad = bad_label(label, lim)
    return bad if bad is not None else (event_id, label)


class LabelSide:
    def __init__(self, settings: Settings, metrics: LabelMetrics, limits: Limits) -> None:
        lab = settings.labels
        self.enabled = lab.enabled
        self.store = JoinStore(lab.join_window_seconds, lab.max_pending)
        self.metrics = metrics
        self.limits = limits
        self.served = PrequentialAccuracy(settings.metrics.rolling_window)

    def take_label_events(self, records: list[Any], batch: DecodedBatch
                          ) -> list[tuple[Any, str, Label]]:
        """Remove label events from ``batch.rejects``; (record, id, label) for each.
        A label event with a bad label becomes a bad_label reject instead."""
        if not self.enabled or not batch.rejects:
            return []
        found: list[tuple[Any, str, Label]] = []
        rejects: list[Reject] = []
        for rej in batch.rejects:
            parsed = (label_event(records[rej.index].value, self.limits)
                      if rej.reason == MISSING_FEATURES else None)
            if parsed is None:
                rejects.append(rej)
            elif isinstance(parsed, str):
                rejects.append(Reject(rej.index, BAD_LABEL, parsed))
            else:
                found.append((records[rej.index], parsed[0], parsed[1]))
        batch.rejects = rejects
        return found

    def keep(self, records: list[Any], batch: DecodedBatch, rows: np.ndarray,
             seq: int) -> list[Pending | None]:
        """Keep the unlabeled rows that have an id; their entries, aligned with ``rows``."""
        out: list[Pending | None] = []
        if not self.enabled:
            return [None] * len(rows)
        store = self.store
        for r in rows.tolist():
            event_id = batch.ids[r]
            if event_id is None:
                out.append(None)
                continue
            rec = records[int(batch.index[r])]
            self._evicted(store.add(event_id, batch.x[r].copy(), int(rec.timestamp), seq))
            out.append(store.get(event_id))
        return out

    def join(self, events: Sequence[tuple[Any, str, Label]], seq: int,
             n_features: int) -> Joined:
        joined = Joined(np.empty((0, n_features), np.float32), [], [], [])
        rows: list[np.ndarray] = []
        store, m = self.store, self.metrics
        for rec, event_id, label in events:
            now_ms = int(rec.timestamp)
            self._evicted(store.advance(now_ms))
            outcome, entry = store.take(event_id, now_ms)
            m.joins.labels(outcome).inc()
            if outcome != JOINED or entry is None:
                joined.rejects.append((rec, outcome, _detail(outcome, event_id, store)))
                continue
            rows.append(entry.x)
            joined.labels.append(label)
            joined.records.append(rec)
            joined.entries.append(entry)
            m.delay_seconds.observe_many(np.array([max(now_ms - entry.at_ms, 0) / 1000.0]))
            m.delay_events.observe_many(np.array([float(seq - entry.seq)]))
        if rows:
            joined.x = np.stack(rows).astype(np.float32, copy=False)
        m.pending.set(len(store))
        return joined

    def predicted(self, entries: list[Pending | None], idx: np.ndarray,
                  labels: list[Label]) -> None:
        """The worker's answer for kept rows: remember what was served."""
        for entry, i in zip(entries, idx.tolist()):
            if entry is not None:
                entry.pred = labels[i] if i >= 0 else None

    def scored_inline(self, y: np.ndarray, pred: np.ndarray) -> None:
        """Inline-labelled events: served and learned at once, delay 0."""
        self.served.update(y, pred)
        self._gauges()

    def scored_joined(self, entries: list[Pending], labels: list[Label]) -> None:
        # Compared as labels, not class indices: the prediction may predate a class.
        hits = np.array([e.pred is not None and type(e.pred) is type(lab) and e.pred == lab
                         for e, lab in zip(entries, labels)], bool)
        self.served.update(np.zeros(hits.size, np.int64), (~hits).astype(np.int64))
        self._gauges()

    def _gauges(self) -> None:
        self.metrics.served_accuracy.labels("total").set(self.served.accuracy)
        self.metrics.served_accuracy.labels("rolling").set(self.served.rolling_accuracy)
        self.metrics.pending.set(len(self.store))

    def _evicted(self, reasons: list[str]) -> None:
        for reason in reasons:
            self.metrics.evictions.labels(reason).inc()

    def state_dict(self) -> dict[str, Any]:
        return {"store": self.store.state_dict(), "served": self.served.state_dict()}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or "store" not in state or "served" not in state:
            raise ValueError("labels state is not {store, served}")
        self.store.load_state_dict(state["store"])
        self.served.load_state_dict(state["served"])
        self._gauges()


def _detail(outcome: str, event_id: str, store: JoinStore) -> str:
    window = store.window_ms / 1000.0
    return {"unknown_id": f"no prediction waits for id {event_id[:80]!r} (never seen, or "
                          f"forgotten more than 2 x labels.join_window_seconds ago)",
            "duplicate_label": f"id {event_id[:80]!r} was already labelled and learned",
            "label_expired": f"id {event_id[:80]!r} waited more than "
                             f"labels.join_window_seconds={window:g} (or was evicted)",
            }.get(outcome, outcome)
