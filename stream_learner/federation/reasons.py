"""Why a peer's update was dropped: the label values of the rejection counter.

Apart from :mod:`.verify` so the metrics (imported by the Kafka loop, which never
imports torch) can declare the labels without importing the verifier.
"""

REASONS = ("malformed", "bad_signature", "unknown_peer", "wrong_federation", "replayed_nonce",
           "stale", "incompatible", "too_many_classes", "bad_label", "non_finite",
           "oversize_norm", "missing_base")
