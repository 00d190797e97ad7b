"""Prediction records: model version, label and probability, optional top-k."""

from __future__ import annotations

import json

import numpy as np

from stream_learner.predictions import encode_predictions


def test_record_fields_and_top_k() -> None:
    plain = json.loads(encode_predictions(["a"], [1], [0.75], ["neg", "pos"], 10, "c-1.pt")[0])
    assert plain == {"id": "a", "label": "pos", "probability": 0.75,
                     "model_events_learned": 10, "model_checkpoint": "c-1.pt"}
    top = [json.loads(v)["top"] for v in encode_predictions(
        ["a", "b"], [1, 0], [0.75, 0.6], ["neg", "pos"], 10, None,
        np.array([[1, 0], [0, 1]]), np.array([[0.75, 0.25], [0.6, 0.4]]))]
    assert top == [[{"label": "pos", "probability": 0.75}, {"label": "neg", "probability": 0.25}],
                   [{"label": "neg", "probability": 0.6}, {"label": "pos", "probability": 0.4}]]
    # No class known yet: the label is null and the top list empty.
    none = json.loads(encode_predictions(["c"], [-1], [0.0], [], 0, None,
                                         np.empty((1, 0), np.int64), np.empty((1, 0)))[0])
    assert (none["label"], none["probability"], none["top"]) == (None, 0.0, [])
