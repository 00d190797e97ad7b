"""The daemon's side of federation: publish our model, read our peers', count it all.

Every daemon publishes to one federation topic and reads all of it with its own
consumer (no group: every replica must see every peer, including the replicas of its
own learning group).  There is no coordinator.  Every ``federation.every_events``
learned events or ``federation.every_seconds``, whichever comes first, the daemon
queues a round on its learner (in order with the micro-batches): the learner returns a
snapshot of its model, which is signed and published, and merges the latest verified
update of every live peer (:mod:`.merge`).  Signatures, the allowlist, replays,
staleness and malformed payloads are checked here, in the daemon, before anything
reaches the learner (:mod:`.verify`); a rejected update is counted by reason and dropped.

A restarted daemon publishes versions above its old ones: versions are microseconds of
the wall clock, so peers that remember our last version accept the new ones.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ..config import Settings
from .codec import Update, encode
from .keys import load_allowlist, load_private
from .merge import MergeReport, PeerModel, Snapshot
from .verify import Rejected, Verifier

log = logging.getLogger(__name__)

REWIND = 32
"""Records per partition read back at start-up: the peers' recent updates, so a new
daemon need not wait a whole period (older ones are rejected as stale, and counted)."""
MAX_UPDATE_BYTES = 64 * 1024 * 1024
POLL_INTERVAL_S = 0.2
"""Peers publish every few seconds at most; a kafka-python poll costs the main loop
about a millisecond, which polling once per loop paid hundreds of times a second
(measured on a backlog at 17 rounds/s: 0.56x of the daemon's events/s, 0.85x at 5 Hz)."""


class Federation:
    def __init__(self, settings: Settings, metrics: Any) -> None:
        cfg = settings.federation
        assert cfg.private_key_file is not None
        self.settings, self.cfg, self.metrics = settings, cfg, metrics
        self.key = load_private(cfg.private_key_file)
        self.peer_id = cfg.peer_id or Path(cfg.private_key_file).stem
        self.allowlist = load_allowlist(cfg.peers, cfg.peers_dir)
        self.allowlist.pop(self.peer_id, None)
        self.topic = cfg.topic or f"{settings.kafka.topic}.federation"
        # Signed into every update we publish and required of every update we accept.
        self.federation_id = cfg.federation_id or self.topic
        self.verifier = Verifier(self.allowlist, self_id=self.peer_id,
                                 max_age_s=cfg.max_age_seconds,
                                 n_features=settings.model.n_features,
                                 hidden=tuple(settings.model.hidden),
                                 federation_id=self.federation_id,
                                 max_classes=settings.model.max_classes,
                                 max_label_length=settings.model.max_label_length)
        # sender -> (its latest verified update, when it arrived).  A round merges only
        # when some peer sent something new since the last one.
        self.latest: dict[str, tuple[Update, float]] = {}
        self._fresh: set[str] = set()
        self.round = 0
        self.version = 0
        self.in_flight = False
        self._last_round_time = time.monotonic()
        self._learned_at_round = 0
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self._assigned = False
        self._next_poll = 0.0
        self._encode_failed_logged = False

    # -- checkpoint -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data for the daemon's checkpoint: the peers' last accepted versions, so
        that an update re-sent after our restart is still a replay."""
        return {"peer_versions": self.verifier.state_dict()["versions"]}

    def load_state_dict(self, state: object) -> None:
        versions = state.get("peer_versions") if isinstance(state, dict) else None
        skipped = self.verifier.load_state_dict({"versions": versions})
        if skipped:
            log.warning("federation state in the checkpoint: %d unreadable peer version "
                        "entr%s ignored", skipped, "y" if skipped == 1 else "ies")

    # -- lifecycle ------------------------------------------------------------------------
    def connect(self) -> None:
        opts = self.settings.kafka.client_options()
        self.consumer = KafkaConsumer(**opts, group_id=None, enable_auto_commit=False,
                                      max_partition_fetch_bytes=MAX_UPDATE_BYTES,
                                      fetch_max_bytes=MAX_UPDATE_BYTES, fetch_max_wait_ms=10)
        self.producer = KafkaProducer(**opts, acks="all", linger_ms=0,
                                      max_request_size=MAX_UPDATE_BYTES)
        log.info("federation on: peer id %s, %d peer key(s), topic %s, aggregator %s",
                 self.peer_id, len(self.allowlist), self.topic, self.cfg.aggregator)

    def close(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # noqa: BLE001 - closing on shutdown, best effort
                    log.debug("closing a federation client: %s", exc)

    def _assign(self) -> bool:
        assert self.consumer is not None
        parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        ends = self.consumer.end_offsets(tps)
        for tp in tps:
            self.consumer.seek(tp, max(0, ends.get(tp, 0) - REWIND))
        self._assigned = True
        return True

    # -- reading --------------------------------------------------------------------------
    def poll(self) -> None:
        """Read whatever peers published (never blocks; at most every POLL_INTERVAL_S)."""
        mono = time.monotonic()
        if mono < self._next_poll:
            return
        self._next_poll = mono + POLL_INTERVAL_S
        if self.consumer is None or (not self._assigned and not self._assign()):
            return
        m = self.metrics
        now = time.time()
        for records in self.consumer.poll(timeout_ms=0, max_records=256).values():
            for rec in records:
                data = rec.value or b""
                m.bytes_received.inc(len(data))
                got = self.verifier.check(data, now)
                if got is None:
                    continue
                if isinstance(got, Rejected):
                    m.rejected.labels(got.reason).inc()
                    log.warning("federation update rejected (%s): %s", got.reason, got.detail)
                    continue
                m.updates_received.inc()
                self.latest[got.sender] = (got, time.monotonic())
                self._fresh.add(got.sender)
        self._refresh_peers()

    def _refresh_peers(self) -> None:
        horizon = time.monotonic() - self.cfg.max_age_seconds
        for sender in [s for s, (_, t) in self.latest.items() if t < horizon]:
            del self.latest[sender]
            self._fresh.discard(sender)
        self.metrics.peers.set(len(self.latest))

    # -- rounds ---------------------------------------------------------------------------
    def due(self, learned: int) -> bool:
        if self.in_flight:
            return False
        return (learned - self._learned_at_round >= self.cfg.every_events or
                time.monotonic() - self._last_round_time >= self.cfg.every_seconds)

    def start_round(self, learned: int) -> list[PeerModel]:
        """The peers' models for the learner to merge; the round is then in flight."""
        self._learned_at_round, self._last_round_time = learned, time.monotonic()
        self.in_flight = True
        self._refresh_peers()
        if not self._fresh:           # nothing new since the last merge: no pull again
            return []
        # Every live peer's latest model, not only the fresh ones: a robust aggregator
        # needs the whole population.  Asynchronous rounds see one or two fresh updates
        # at a time, and a trim or median of two models is their mean, the attacker's
        # included.  Staleness (age in periods) discounts the old ones in fedavg.
        now, period = time.time(), self.cfg.every_seconds
        peers = [PeerModel(u.sender, u.params, list(u.labels), u.samples,
                           max(0.0, now - u.timestamp) / period)
                 for u, _ in self.latest.values()]
        self._fresh.clear()
        return peers

    def finish_round(self, snapshot: Snapshot | None, report: MergeReport) -> None:
        """The learner did its part: publish our snapshot, account for the merge."""
        self.in_flight = False
        self.round += 1
        m = self.metrics
        m.rounds.inc()
        for reason, n in report.rejected.items():
            m.rejected.labels(reason).inc(n)
        for sender in report.rejected_senders:     # not a live peer: its model was refused
            self.latest.pop(sender, None)
        self.metrics.peers.set(len(self.latest))
        if report.merged:
            m.last_merge.set(time.time())
            m.distance.set(report.distance)
            m.aggregation_duration.observe(report.seconds)
        if snapshot is not None:
            self._publish(snapshot)

    def _publish(self, snap: Snapshot) -> None:
        self.version = max(self.version + 1, time.time_ns() // 1000)
        update = Update(sender=self.peer_id, version=self.version, samples=snap.samples,
                        labels=list(snap.labels), timestamp=time.time(),
                        nonce=os.urandom(16), n_features=snap.n_features,
                        hidden=tuple(snap.hidden), params=snap.params, base_version=None,
                        federation=self.federation_id)
        try:
            data = encode(update, self.key, float16=self.cfg.float16)
        except Exception as exc:  # noqa: BLE001 - our own model must never stop the loop
            # E.g. a label map too large for the header: skipping the round keeps the
            # daemon learning; every failure is counted, logged once (it repeats each round).
            self.metrics.publish_errors.inc()
            if not self._encode_failed_logged:
                self._encode_failed_logged = True
                log.error("federation: cannot encode our update (%s: %.200s); rounds are "
                          "skipped until it encodes (counted in publish errors)",
                          type(exc).__name__, exc)
            return
        assert self.producer is not None
        try:
            self.producer.send(self.topic, value=data, key=self.peer_id.encode())
        except Exception as exc:  # noqa: BLE001 - a lost publication costs one round only
            self.metrics.publish_errors.inc()
            log.warning("federation publish failed (%s); next round retries", exc)
            return
        self.metrics.updates_sent.inc()
        self.metrics.bytes_sent.inc(len(data))
