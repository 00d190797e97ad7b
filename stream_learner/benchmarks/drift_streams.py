"""Event streams with known drift points for ``stream-learner bench drift``.

Every stream is materialised once: ``x`` float32 ``[n, d]`` (features in sorted-key
order, categorical/bool as float), ``labels`` (ints or strings, as the source gives them;
bools become 0/1 ints, the daemon's label contract is int | str), and the true drifts as
:class:`Drift` ``(start, end)`` event indices: ``start`` is the first event of the
change and ``end`` the first event where the new concept fully holds (``start == end``
for an abrupt drift; the transition window of a gradual or incremental one otherwise).

Streams (``n`` events, a drift every ``drift_every``, from river's generators):

``sea``          SEA, threshold variants 0->1->2->3 cycling, abrupt, 10% label noise
                 (:func:`stream_learner.synth.take`, the product's own demo stream).
``agrawal``      Agrawal, classification function 0->1->2->3..., abrupt
                 (:func:`stream_learner.synth.take`).
``agrawal-gradual``  the same functions, gradual: river's ConceptDriftStream rule
                 (P(new) = sigmoid(4 (t - centre) / width)) over ``gradual_width`` events.
``hyperplane``   rotating hyperplane, incremental: the weights of 5 of 10 features move
                 by 1.0 over ``incremental_width`` events after each drift point (river's
                 ``mag_change``, 0 elsewhere; sigma 0.011: directions flip now and
                 then), stationary in between; 5% label noise.
``rbf``          RandomRBFDrift (50 centroids, 10 features, 2 classes), incremental: every
                 centroid moves ``rbf_move`` (unit-cube distance) over
                 ``incremental_width`` events after each drift point, still in between.
``led``          LEDDrift (24 features, 10% noise), abrupt: each segment swaps a different
                 set of relevant/irrelevant attributes (n_drift_features 1, 3, 5, 7).
``recurring``    Agrawal functions A, B, A, B, ... (``recurring_functions``), abrupt.
``phishing``, ``bananas``, ``imagesegments``: river's bundled real datasets in their
                 order (no known drifts; at most ``real_events`` events when > 0).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

SYNTHETIC = ("sea", "agrawal", "agrawal-gradual", "hyperplane", "rbf", "led", "recurring")
REAL = ("phishing", "bananas", "imagesegments")
ALL_STREAMS = SYNTHETIC + REAL

# river's published prequential accuracy of ARFClassifier on its bundled datasets
# (river's documentation / benchmarks): shown beside the figures of the run, never used
# for a verdict (river's ARF runs on the same events in the same run for that).
PUBLISHED_ARF = {"phishing": 0.909, "bananas": 0.887, "imagesegments": 0.819}


@dataclass(frozen=True)
class Drift:
    start: int          # first event of the change
    end: int            # first event of the new concept alone (== start: abrupt)
    kind: str           # "abrupt" | "gradual" | "incremental"


@dataclass
class Stream:
    name: str
    description: str
    x: np.ndarray                                  # float32 [n, d]
    labels: list[Any]                              # int | str per event
    feature_names: tuple[str, ...]
    drifts: list[Drift] = field(default_factory=list)
    synthetic: bool = True
    # recurring stream: (first event, concept name) per segment
    segments: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.labels)

    def dicts(self) -> list[dict[str, float]]:
        """The events as river wants them: ``{feature name: float}``."""
        names = self.feature_names
        return [dict(zip(names, row)) for row in self.x.tolist()]


def _label(y: Any) -> Any:
    if isinstance(y, (bool, np.bool_)):
        return int(y)
    if isinstance(y, (int, np.integer)):
        return int(y)
    return str(y)


def _materialise(rows: Iterator[tuple[dict[Any, Any], Any]], n: int | None
                 ) -> tuple[np.ndarray, list[Any], tuple[str, ...]]:
    """river ``(dict, label)`` rows -> float32 matrix (sorted keys), labels, names."""
    got = list(rows if n is None else itertools.islice(rows, n))
    if not got:
        raise ValueError("empty stream")
    keys = sorted(got[0][0])
    x = np.array([[float(r[0][k]) for k in keys] for r in got], dtype=np.float32)
    return x, [_label(r[1]) for r in got], tuple(str(k) for k in keys)


def _abrupt(n: int, every: int) -> list[Drift]:
    return [Drift(p, p, "abrupt") for p in range(every, n, every)]


def _segment_seeds(seed: int) -> Iterator[int]:
    rng = random.Random(f"drift-bench-{seed}")
    while True:
        yield rng.randrange(2**31)


# ----------------------------------------------------------------------------- synthetic

def _from_synth(name: str, n: int, every: int, seed: int) -> tuple[np.ndarray, list[Any],
                                                                      tuple[str, ...]]:
    from .. import synth

    x, y = synth.take(name, n, seed=seed, drift_every=every)
    return x, [int(v) for v in y], tuple(synth.feature_names(name))


def sea(n: int, every: int, seed: int) -> Stream:
    x, y, names = _from_synth("sea", n, every, seed)
    return Stream("sea", f"SEA variants 0->1->2->3 (noise 0.1), abrupt every {every:,}",
                  x, y, names, _abrupt(n, every))


def agrawal(n: int, every: int, seed: int) -> Stream:
    x, y, names = _from_synth("agrawal", n, every, seed)
    return Stream("agrawal", f"Agrawal functions 0->1->2->..., abrupt every {every:,}",
                  x, y, names, _abrupt(n, every))


def _mixed(concepts: list[Iterator[tuple[dict[Any, Any], Any]]], centres: list[int],
           width: int, n: int, seed: int) -> Iterator[tuple[dict[Any, Any], Any]]:
    """Concept ``k`` after ``k`` drifts, each drawn like river's ConceptDriftStream:
    event t comes from the newer concept with probability sigmoid(4 (t - centre) / width)."""
    rng = random.Random(seed)
    for t in range(n):
        u = rng.random()
        k = 0
        for c in centres:
            z = -4.0 * (t - c) / width
            p = 0.0 if z > 700 else 1.0 / (1.0 + math.exp(z))
            if u < p:
                k += 1
        yield next(concepts[k])


def agrawal_gradual(n: int, every: int, width: int, seed: int) -> Stream:
    from river.datasets import synth as rs

    centres = list(range(every, n, every))
    seeds = _segment_seeds(seed)
    concepts = [iter(rs.Agrawal(classification_function=k % 10, seed=next(seeds),
                                balance_classes=False, perturbation=0.0))
                for k in range(len(centres) + 1)]
    x, y, names = _materialise(_mixed(concepts, centres, width, n, seed), n)
    half = width // 2
    drifts = [Drift(max(0, c - half), min(n, c + half), "gradual") for c in centres]
    return Stream("agrawal-gradual", f"Agrawal functions 0->1->2->..., gradual (width "
                  f"{width:,}) centred every {every:,}", x, y, names, drifts)


def _windows(gen: Any, attr: str, rate: float, n: int, every: int,
             width: int) -> Iterator[tuple[dict[Any, Any], Any]]:
    """river generator ``gen`` with its drift speed ``attr`` = ``rate`` only during
    ``[k * every, k * every + width)`` for k >= 1, and 0 elsewhere (river reads the
    attribute at every event, so setting it between events takes effect at once)."""
    setattr(gen, attr, 0.0)
    it = iter(gen)
    for t in range(n):
        moving = t >= every and (t % every) < width
        setattr(gen, attr, rate if moving else 0.0)
        yield next(it)


def hyperplane(n: int, every: int, width: int, seed: int) -> Stream:
    from river.datasets import synth as rs

    # Each drift window moves each drifting weight by 1.0 (initial weights are U(0, 1)).
    # river flips a weight's direction when 0.01 + U(0, 1) <= sigma: sigma 0.011 flips it
    # with probability 0.001 per event, so the windows move in different directions
    # (with sigma 0 every move is +1 and later drifts barely change the concept).
    gen = rs.Hyperplane(seed=seed, n_features=10, n_drift_features=5, mag_change=0.0,
                        noise_percentage=0.05, sigma=0.011)
    x, y, names = _materialise(_windows(gen, "mag_change", 1.0 / width, n, every, width), n)
    drifts = [Drift(p, min(n, p + width), "incremental") for p in range(every, n, every)]
    return Stream("hyperplane", f"Hyperplane (10 features, 5 drifting), incremental over "
                  f"{width:,} events every {every:,}", x, y, names, drifts)


def rbf(n: int, every: int, width: int, move: float, seed: int) -> Stream:
    from river.datasets import synth as rs

    gen = rs.RandomRBFDrift(seed_model=seed, seed_sample=seed + 1, n_classes=2,
                            n_features=10, n_centroids=50, change_speed=0.0,
                            n_drift_centroids=50)
    x, y, names = _materialise(_windows(gen, "change_speed", move / width, n, every, width), n)
    drifts = [Drift(p, min(n, p + width), "incremental") for p in range(every, n, every)]
    return Stream("rbf", f"RandomRBFDrift (50 centroids, 10 features), incremental: "
                  f"centroids move {move:g} over {width:,} events every {every:,}",
                  x, y, names, drifts)


def led(n: int, every: int, seed: int) -> Stream:
    from river.datasets import synth as rs

    def gen() -> Iterator[tuple[dict[Any, Any], Any]]:
        for k, s in enumerate(_segment_seeds(seed)):
            concept = rs.LEDDrift(seed=s, noise_percentage=0.1, irrelevant_features=True,
                                  n_drift_features=(1, 3, 5, 7)[k % 4])
            yield from itertools.islice(concept, every)

    x, y, names = _materialise(gen(), n)
    return Stream("led", f"LEDDrift (24 features, noise 0.1), attribute swaps 1/3/5/7, "
                  f"abrupt every {every:,}", x, y, names, _abrupt(n, every))


def recurring(n: int, every: int, functions: tuple[int, int], seed: int) -> Stream:
    from river.datasets import synth as rs

    seeds = _segment_seeds(seed + 1)
    # One generator per concept, continued where it left off when the concept returns.
    gens = [iter(rs.Agrawal(classification_function=f, seed=next(seeds),
                            balance_classes=False, perturbation=0.0)) for f in functions]

    def gen() -> Iterator[tuple[dict[Any, Any], Any]]:
        for k in itertools.count():
            yield from itertools.islice(gens[k % 2], every)

    x, y, names = _materialise(gen(), n)
    segments = [(p, "AB"[(p // every) % 2]) for p in range(0, n, every)]
    return Stream("recurring", f"Agrawal functions {functions[0]} (A) / {functions[1]} (B) "
                  f"alternating A, B, A, B..., abrupt every {every:,}", x, y, names,
                  _abrupt(n, every), segments=segments)


# ----------------------------------------------------------------------------- real

def real(name: str, limit: int) -> Stream:
    from river import datasets

    source = {"phishing": datasets.Phishing, "bananas": datasets.Bananas,
              "imagesegments": datasets.ImageSegments}[name]()
    x, y, names = _materialise(iter(source), limit if limit > 0 else None)
    return Stream(name, f"river.datasets.{type(source).__name__} in its order "
                  f"({len(y):,} events, no known drifts)", x, y, names, [], synthetic=False)


def build(name: str, cfg: Any, seed: int | None = None) -> Stream:
    """Stream ``name`` at the sizes of a :class:`~.drift.DriftConfig`; ``seed`` (default
    ``cfg.seed``) seeds a synthetic stream, a real one is the dataset whatever it is."""
    n, every = cfg.events, cfg.drift_every
    seed = cfg.seed if seed is None else seed
    if name == "sea":
        return sea(n, every, seed)
    if name == "agrawal":
        return agrawal(n, every, seed)
    if name == "agrawal-gradual":
        return agrawal_gradual(n, every, cfg.gradual_width, seed)
    if name == "hyperplane":
        return hyperplane(n, every, cfg.incremental_width, seed)
    if name == "rbf":
        return rbf(n, every, cfg.incremental_width, cfg.rbf_move, seed)
    if name == "led":
        return led(n, every, seed)
    if name == "recurring":
        return recurring(n, every, tuple(cfg.recurring_functions), seed)  # type: ignore[arg-type]
    if name in REAL:
        return real(name, cfg.real_events)
    raise ValueError(f"unknown stream {name!r}; choose from {list(ALL_STREAMS)}")
