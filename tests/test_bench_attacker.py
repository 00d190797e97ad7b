"""The federation benchmark's malicious site: a benchmark-side wrapper, not a daemon option."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from stream_learner.benchmarks import attacker
from stream_learner.config import Settings
from stream_learner.federation import merge
from stream_learner.learner import Learner


def _learner() -> Learner:
    lrn = Learner(Settings(model={"device": "cpu"}))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    lrn.learn(x, ["p" if v > 0 else "n" for v in x[:, 0]])
    return lrn


def test_the_daemon_has_no_attack_option(monkeypatch) -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings(federation={"attack": "sign_flip"})
    monkeypatch.setenv("STREAM_LEARNER_FEDERATION__ATTACK", "sign_flip")
    with pytest.raises(pydantic.ValidationError):
        Settings()


@pytest.mark.parametrize("attack", attacker.ATTACKS)
def test_the_wrapper_corrupts_what_the_site_publishes(attack: str, monkeypatch) -> None:
    honest = _learner().federated.snapshot()
    monkeypatch.setattr(merge.Federated, "snapshot", merge.Federated.snapshot)
    attacker.install(attack)
    bad = _learner().federated.snapshot()
    assert honest is not None and bad is not None
    for k, v in honest.params.items():
        if k.startswith(merge.PARAM_PREFIXES):
            want = -10.0 * v if attack == "sign_flip" else v   # no anchor yet: ref = 0
            if attack == "sign_flip":
                torch.testing.assert_close(bad.params[k], want)
            else:
                assert (bad.params[k] - v).abs().mean() > 1.0, k
        else:
            assert torch.equal(bad.params[k], v), k


def test_an_unknown_attack_is_refused() -> None:
    with pytest.raises(ValueError, match="BENCH_FEDERATION_ATTACK"):
        attacker.install("label_flip")
