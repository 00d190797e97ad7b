"""stream_learner_replay_buffer_events is the replay memory's size for every strategy.

It read 0 for ``strategy.name=continual`` while its reservoir held 10,000 events: the
host probed ``strategy.buffer``, and Continual calls it ``memory``.  Now every strategy
declares ``memory_events()``; here it is compared with each strategy's own buffer.
"""

from __future__ import annotations

import numpy as np
import pytest

from stream_learner.config import Settings
from stream_learner.learner_host import InlineLearner


def _own_buffer_length(strategy) -> int:
    name = strategy.name
    if name == "replay":
        return len(strategy.buffer)
    if name == "continual":
        return len(strategy.memory)
    # Avalanche's Replay: the plugin's reservoir, read the way Avalanche exposes it.
    [plugin] = [p for p in strategy.template.plugins if type(p).__name__ == "ReplayPlugin"]
    return len(plugin.storage_policy.buffer)


@pytest.mark.parametrize("name", ["replay", "continual", "avalanche:Replay"])
def test_replay_gauge_equals_the_buffer_length(name: str) -> None:
    settings = Settings(strategy={"name": name}, replay={"capacity": 300},
                        model={"device": "cpu", "hidden": (8,)}, probes={"per_class": 0})
    host = InlineLearner(settings)
    rng = np.random.default_rng(0)
    for i in range(4):
        x = rng.normal(size=(128, 3)).astype(np.float32)
        host.submit_learn(x, (x[:, 0] > 0).astype(int).tolist(), ctx=i)
        host.completed()
        expected = _own_buffer_length(host._core.learner.strategy)
        assert expected > 0 and host.info.buffer_events == expected
    assert host.info.buffer_events == 300             # full: the capacity
