"""Messages for the predictions topic (one per unlabeled event).

>>> encode_predictions(["a1"], [1], [0.75], ["neg", "pos"], 1000, "ckpt-000007.pt")
[b'{"id":"a1","label":"pos","probability":0.75,"model_events_learned":1000,"model_checkpoint":"ckpt-000007.pt"}']
"""

from __future__ import annotations

from typing import Sequence

import msgspec

from .labels import Label

_ENCODER = msgspec.json.Encoder()


def encode_predictions(ids: Sequence[str | None], indices: Sequence[int],
                       probabilities: Sequence[float], labels: Sequence[Label],
                       events_learned: int, checkpoint: str | None = None) -> list[bytes]:
    """``label`` is null (probability 0) while the model knows no class yet;
    ``model_checkpoint`` (null before the first) names the checkpoint the model has
    learned on from, ``model_events_learned`` how far."""
    out = []
    for event_id, idx, p in zip(ids, indices, probabilities):
        known = idx >= 0
        out.append(_ENCODER.encode({"id": event_id, "label": labels[idx] if known else None,
                                    "probability": round(p, 6) if known else 0.0,
                                    "model_events_learned": events_learned,
                                    "model_checkpoint": checkpoint}))
    return out
