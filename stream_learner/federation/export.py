"""The federation series on the daemon's Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .reasons import REASONS

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FederationMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        p, r = prefix, registry
        self.rounds = Counter(p + "federation_rounds_total", "Federation rounds: our model "
                              "published and the live peers' merged.", registry=r)
        self.peers = Gauge(p + "federation_peers", "Peers with a verified update within "
                           "federation.max_age_seconds.", registry=r)
        self.rejected = Counter(p + "federation_updates_rejected_total", "Peer updates "
                                "rejected before touching the model, by reason.", ["reason"],
                                registry=r)
        self.updates_received = Counter(p + "federation_updates_received_total",
                                        "Verified peer updates.", registry=r)
        self.updates_sent = Counter(p + "federation_updates_sent_total",
                                    "Our updates published.", registry=r)
        self.publish_errors = Counter(p + "federation_publish_errors_total",
                                      "Our updates that could not be encoded or handed to "
                                      "Kafka (that round is not published).",
                                      registry=r)
        self.bytes_sent = Counter(p + "federation_sent_bytes_total",
                                  "Bytes of our published updates.", registry=r)
        self.bytes_received = Counter(p + "federation_received_bytes_total",
                                      "Bytes of updates read from the federation topic.",
                                      registry=r)
        self.aggregation_duration = Histogram(p + "federation_aggregation_duration_seconds",
                                              "Aligning, aggregating and merging one round.",
                                              buckets=DURATION_BUCKETS, registry=r)
        self.last_merge = Gauge(p + "federation_last_merge_timestamp_seconds",
                                "When peers' models were last merged into ours.", registry=r)
        self.distance = Gauge(p + "federation_model_distance", "L2 distance between our "
                              "model and the aggregate at the last merge.", registry=r)
        for reason in REASONS:
            self.rejected.labels(reason)
