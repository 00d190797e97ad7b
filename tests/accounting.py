"""Identity accounting for the broker tests: what was sent, by (partition, offset) and id,
checked against a checkpoint and against the DLQ and predictions topics.

The daemon keeps no per-event record, so "every event once" is checked through what it
does keep: a checkpoint's positions cover offsets 0..end-1 of each partition exactly,
its counters match the kinds sent (by reason for rejects), and the output topics hold
exactly the expected identities (each poison offset, each unlabeled id) at least once,
and nothing else.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from kafka import KafkaConsumer, KafkaProducer

from stream_learner.synth import BAD_REASONS, event_messages

# too_large is 2 MiB per event: slow to send and beside the point here.
REASONS = tuple(r for r in BAD_REASONS if r != "too_large")
VALID, UNLABELED = "valid", "unlabeled"


@dataclass
class Sent:
    """Every acknowledged event: (partition, offset) -> (id, kind: valid/unlabeled/reason)."""

    topic: str
    events: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, partition: int, offset: int, event_id: str, kind: str) -> None:
        with self._lock:
            assert (partition, offset) not in self.events, "offset acknowledged twice"
            self.events[(partition, offset)] = (event_id, kind)

    def __len__(self) -> int:
        return len(self.events)

    def kinds(self) -> Counter[str]:
        return Counter(kind for _, kind in self.events.values())

    def poison(self) -> dict[tuple[int, int], str]:
        return {po: kind for po, (_, kind) in self.events.items()
                if kind not in (VALID, UNLABELED)}

    def unlabeled_ids(self) -> set[str]:
        return {i for i, kind in self.events.values() if kind == UNLABELED}

    def ends(self) -> dict[int, int]:
        """Per partition, one past the last offset; checked to be gapless from 0."""
        by_partition: dict[int, list[int]] = {}
        for p, o in self.events:
            by_partition.setdefault(p, []).append(o)
        for p, offs in by_partition.items():
            assert sorted(offs) == list(range(len(offs))), f"partition {p} has gaps"
        return {p: len(offs) for p, offs in by_partition.items()}


def send_mixed(bootstrap: str, topic: str, n: int, sent: Sent, *, start_id: int = 0,
               seed: int = 42, partitions: int = 1, rate: float | None = None,
               bad_fraction: float = 0.05, unlabeled_fraction: float = 0.1) -> None:
    """``n`` sea events (valid, poison of every reason but too_large, unlabeled), event i to
    partition i % partitions; each acknowledgement's offset recorded in ``sent``."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                             max_in_flight_requests_per_connection=1, retries=10)
    started = time.monotonic()
    try:
        messages = event_messages("sea", n, seed=seed, bad_fraction=bad_fraction,
                                  unlabeled_fraction=unlabeled_fraction, start_id=start_id,
                                  bad_reasons=REASONS)
        futures = []
        for i, (value, reason) in enumerate(messages):
            if rate is not None:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            kind = reason or (UNLABELED if json.loads(value)["label"] is None else VALID)
            future = producer.send(topic, value=value, partition=i % partitions)
            futures.append((future, str(start_id + i), kind))
            if len(futures) >= 500:
                _settle(futures, sent)
        _settle(futures, sent)
    finally:
        producer.close()


def _settle(futures: list[tuple[Any, str, str]], sent: Sent) -> None:
    for future, event_id, kind in futures:
        md = future.get(timeout=60)
        sent.add(md.partition, md.offset, event_id, kind)
    futures.clear()


def check_checkpoint(state: dict[str, Any], sent: Sent, *earlier: Sent) -> None:
    """The checkpoint's positions cover exactly every offset of ``sent`` once, and its
    counters match what was sent (``earlier``: streams of a lost log, counted too)."""
    kinds = sum((e.kinds() for e in earlier), sent.kinds())
    c = state["counters"]
    assert state["offsets"] == {sent.topic: sent.ends()}, (state["offsets"], sent.ends())
    assert c["consumed"] == len(sent) + sum(len(e) for e in earlier)
    assert c["predicted"] == kinds[UNLABELED]
    assert c["learned"] + c["held_out"] == kinds[VALID]
    expected_rejects = {r: k for r, k in kinds.items() if r not in (VALID, UNLABELED)}
    assert {r: k for r, k in c["rejected"].items() if k} == expected_rejects


def check_lineage(states: list[dict[str, Any]], sent: Sent) -> None:
    """Each checkpoint's counters are the kinds of exactly the offsets it covers.

    A checkpoint at positions {p: o} has processed offsets 0..o-1 of each partition; its
    counters must count those events by kind (valid, unlabeled, each reject reason). A
    checkpoint that skipped an event and repeated another of a different kind, or whose
    positions ran ahead of what it counted, fails here even when the totals agree. (The
    daemon keeps no per-event record: a skip and a repeat of the same kind stay invisible.)
    """
    for state in states:
        positions = state["offsets"].get(sent.topic, {})
        covered = Counter(kind for (p, o), (_, kind) in sent.events.items()
                          if o < positions.get(p, 0))
        c = state["counters"]
        got = Counter({VALID: c["learned"] + c["held_out"], UNLABELED: c["predicted"],
                       **c["rejected"]})
        assert +got == +covered, (positions, dict(got), dict(covered))


def read_identities(bootstrap: str, topic: str, identity: Callable[[Any], Any],
                    expected: set[Any], timeout: float = 60.0) -> list[tuple[Any, Any]]:
    """(identity, record) for every record of ``topic``, read until every ``expected``
    identity was seen (or ``timeout``), then one more poll for anything beyond it.

    Not a count: at-least-once outputs repeat records, so a count can be reached before
    the last identity arrives."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_partition_fetch_bytes=8 * 1024 * 1024)
    out: list[tuple[Any, Any]] = []
    seen: set[Any] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not expected <= seen:
            for recs in consumer.poll(timeout_ms=500).values():
                for r in recs:
                    out.append((identity(r), r))
                    seen.add(out[-1][0])
        for recs in consumer.poll(timeout_ms=1000).values():
            out.extend((identity(r), r) for r in recs)
    finally:
        consumer.close()
    return out


def _source(record: Any) -> tuple[int, int]:
    h = {k: v.decode() for k, v in record.headers}
    assert h["source_topic"], h
    return int(h["source_partition"]), int(h["source_offset"])


def check_outputs(bootstrap: str, sent: Sent, dlq_topic: str, predictions_topic: str) -> None:
    """Every poison offset dead-lettered with its reason, every unlabeled id predicted
    (each at least once: those outputs are at-least-once), and nothing else."""
    poison = sent.poison()
    dlq: dict[tuple[int, int], set[str]] = {}
    for po, r in read_identities(bootstrap, dlq_topic, _source, set(poison)):
        h = {k: v.decode() for k, v in r.headers}
        assert h["source_topic"] == sent.topic
        dlq.setdefault(po, set()).add(h["reason"])
    missing, extra = set(poison) - set(dlq), set(dlq) - set(poison)
    assert not missing and not extra, (f"{len(missing)} poison offsets not in the DLQ, e.g. "
                                       f"{sorted(missing)[:10]}; {len(extra)} unexpected, "
                                       f"e.g. {sorted(extra)[:10]}")
    wrong = {po: (reasons, poison[po]) for po, reasons in dlq.items() if reasons != {poison[po]}}
    assert not wrong, wrong
    unlabeled = sent.unlabeled_ids()
    predicted = Counter(i for i, _ in read_identities(
        bootstrap, predictions_topic, lambda r: json.loads(r.value)["id"], unlabeled))
    missing, extra = unlabeled - set(predicted), set(predicted) - unlabeled
    assert not missing and not extra, (f"{len(missing)} unlabeled ids not predicted, e.g. "
                                       f"{sorted(missing)[:10]}; {len(extra)} unexpected, "
                                       f"e.g. {sorted(extra)[:10]}")
