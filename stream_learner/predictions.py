"""Messages for the predictions topic (one per unlabeled event).

>>> encode_predictions(["a1"], [1], [0.75], ["neg", "pos"], 1000, "ckpt-000007.pt")
[b'{"id":"a1","label":"pos","probability":0.75,"model_events_learned":1000,"model_checkpoint":"ckpt-000007.pt"}']
"""

from __future__ import annotations

from typing import Any, Sequence

import msgspec
import numpy as np

from .labels import Label

_ENCODER = msgspec.json.Encoder()


def encode_predictions(ids: Sequence[str | None], indices: Sequence[int],
                       probabilities: Sequence[float], labels: Sequence[Label],
                       events_learned: int, checkpoint: str | None = None,
                       top_idx: np.ndarray | None = None,
                       top_proba: np.ndarray | None = None) -> list[bytes]:
    """``label`` is null (probability 0) while the model knows no class yet;
    ``model_checkpoint`` (null before the first) names the checkpoint the model has
    learned on from, ``model_events_learned`` how far."""
    out = []
    for row, (event_id, idx, p) in enumerate(zip(ids, indices, probabilities)):
        known = idx >= 0
        record: dict[str, Any] = {"id": event_id, "label": labels[idx] if known else None,
                                  "probability": round(p, 6) if known else 0.0,
                                  "model_events_learned": events_learned,
                                  "model_checkpoint": checkpoint}
        if top_idx is not None and top_proba is not None:     # kafka.predictions_top_k > 1
            record["top"] = [{"label": labels[i], "probability": round(q, 6)} for i, q
                             in zip(top_idx[row].tolist(), top_proba[row].tolist())]
        out.append(_ENCODER.encode(record))
    return out
