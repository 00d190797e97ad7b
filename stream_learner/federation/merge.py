"""The learner's side of a federation round: snapshot our model, merge our peers'.

Runs where the model lives (the worker process), between two micro-batches, so a merge
never lands in the middle of an update.  A round:

1. :meth:`Federated.snapshot`: our parameters and label map, for the daemon to sign
   and publish, with the labeled events learned since the previous snapshot;
2. :meth:`Federated.merge`: each peer's latest model is brought into our frame (its
   class rows matched to ours by label, its first layer re-expressed for our input
   standardisation: :mod:`.align`), checked for distance, and aggregated with ours by
   the configured robust aggregator (:mod:`.aggregate`), each weighted by its samples
   and its staleness.  Then ``local = (1 - mix) * local + mix * aggregate``, and the
   aggregate becomes the anchor of the FedProx pull that :meth:`Learner.step` adds while
   learning locally.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..config import FederationSettings
from . import aggregate as agg
from .align import peer_in_local_frame

OUTLIER_FLOOR = 0.25
"""A peer this close (times our weights' norm) is never dropped as an outlier."""
PARAM_PREFIXES = ("body.", "head.")
"""What is exchanged and mixed: the weights.  The input standardisation stays local
(peers are re-expressed in it); ``n_classes_t`` follows our label map."""


@dataclass(frozen=True)
class PeerModel:
    """A verified peer update, as the worker needs it."""

    sender: str
    params: dict[str, torch.Tensor]
    labels: list[Any]
    samples: int
    age: float                  # in federation periods, from its timestamp


@dataclass(frozen=True)
class Snapshot:
    params: dict[str, torch.Tensor]      # float32/float64 CPU copies of the state_dict
    labels: list[Any]
    samples: int                         # labeled events learned since the last snapshot
    n_features: int
    hidden: tuple[int, ...]


@dataclass
class MergeReport:
    merged: bool = False
    participants: int = 0                # peers that went into the aggregate
    rejected: dict[str, int] = field(default_factory=dict)   # reason -> count
    rejected_senders: list[str] = field(default_factory=list)
    distance: float = math.nan           # ||local - aggregate|| before the merge
    seconds: float = 0.0


class Federated:
    """Snapshot and merge for one :class:`~stream_learner.learner.Learner`."""

    def __init__(self, settings: FederationSettings, learner: Any) -> None:
        self.cfg = settings
        self.learner = learner
        self._seen_at_snapshot = 0
        self._typical_distance = 0.0      # see _outlier_scale

    def snapshot(self) -> Snapshot | None:
        lrn = self.learner
        if lrn.model is None or lrn.model.n_classes == 0:
            return None
        state = {k: v.detach().to("cpu", copy=True) for k, v in lrn.model.state_dict().items()}
        samples, self._seen_at_snapshot = lrn.seen - self._seen_at_snapshot, lrn.seen
        return Snapshot(state, list(lrn.labels.labels), int(samples), lrn.model.n_features,
                        tuple(lrn.model.hidden))

    @torch.no_grad()
    def merge(self, peers: Sequence[PeerModel]) -> MergeReport:
        t0 = time.perf_counter()
        report = MergeReport()
        lrn = self.learner
        if lrn.model is None or lrn.model.n_classes == 0 or not peers:
            return report
        device = lrn.device
        local_state = lrn.model.state_dict()
        local_labels = list(lrn.labels.labels)
        names = [k for k in local_state if k.startswith(PARAM_PREFIXES)]
        local = {k: local_state[k].detach().float() for k in names}
        local_vec, spec = agg.flatten(local)
        rows = [local_vec]
        weights = [agg.sample_weight(max(lrn.seen - self._seen_at_snapshot, 1),
                                     self.cfg.max_samples)]
        kept: list[PeerModel] = []                  # the peers behind rows[1:]
        dists: list[float] = []                     # and their distances from us
        for peer in peers:
            try:
                framed = peer_in_local_frame(
                    {k: v.to(device) for k, v in peer.params.items()}, peer.labels,
                    local_state, local_labels)
            except ValueError:
                _count(report, peer, "incompatible")
                continue
            vec, _ = agg.flatten({k: framed[k].float() for k in names})
            if not bool(torch.isfinite(vec).all()):
                _count(report, peer, "non_finite")
                continue
            dist = float(torch.linalg.vector_norm(vec - local_vec))
            if dist > self.cfg.max_distance:
                _count(report, peer, "oversize_norm")
                continue
            dists.append(dist)
            rows.append(vec)
            kept.append(peer)
            # Claimed samples are capped (federation.max_samples): no peer outweighs
            # the rest by claiming more.
            weights.append(agg.sample_weight(peer.samples, self.cfg.max_samples) *
                           agg.staleness_weight(peer.age, self.cfg.staleness_exponent))
        report.participants = len(rows) - 1
        if report.participants == 0:
            report.seconds = time.perf_counter() - t0
            return report
        X = torch.stack(rows)
        w = torch.tensor(weights, dtype=X.dtype, device=X.device)
        if self.cfg.aggregator != "fedavg" and self.cfg.outlier_factor > 0:
            # Honest peers at different merge stages sit 0.01-1 apart (weights' norm
            # ~10), and 3x the nearer of two would drop the other: nothing within
            # OUTLIER_FLOOR x our weights' norm is an outlier.  Noise (~700 away) and
            # a 10x sign flip still are.
            floor = OUTLIER_FLOOR * float(torch.linalg.vector_norm(local_vec))
            scale = max(self._outlier_scale(dists, local_vec),
                        floor / self.cfg.outlier_factor)
            far = agg.far_outliers(X, local_vec, self.cfg.outlier_factor, scale)
            for i in far.nonzero().flatten().tolist():
                _count(report, kept[i - 1], "oversize_norm")
            X, w = X[~far], w[~far]
            report.participants = X.shape[0] - 1
            if report.participants == 0:
                report.seconds = time.perf_counter() - t0
                return report
        aggregate = self._aggregate(X, w)
        report.distance = float(torch.linalg.vector_norm(local_vec - aggregate))
        mixed = agg.unflatten(agg.mix(local_vec, aggregate, self.cfg.mix), spec)
        anchor = agg.unflatten(aggregate, spec)
        for name, param in lrn.model.named_parameters():
            if name in mixed:
                param.copy_(mixed[name].to(param.dtype))
        lrn.set_proximal_anchor({k: v.clone() for k, v in anchor.items()}, self.cfg.proximal_mu)
        report.merged = True
        report.seconds = time.perf_counter() - t0
        return report

    def _outlier_scale(self, dists: list[float], local: torch.Tensor) -> float:
        """A typical honest peer's distance from us.  The median needs three peers to
        outvote one attacker: asynchronous rounds often see fewer (at start-up, after a
        restart), and the median of an honest and a far peer is half the far one.  With
        two, the nearer; with one, the last round's scale that two or more gave, or
        before any, the norm of our own weights: a peer that shares our architecture
        and initialisation is not several times that far (measured: a noise attacker
        heard alone at start-up, merged unfiltered, cost every honest site 10 points)."""
        if len(dists) >= 3:
            scale = statistics.median(dists)
        elif len(dists) == 2:
            scale = min(dists)
        else:
            return self._typical_distance or float(torch.linalg.vector_norm(local.double()))
        self._typical_distance = scale
        return scale

    def _aggregate(self, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        name, f = self.cfg.aggregator, self.cfg.byzantine
        if name in ("krum", "multi_krum") and X.shape[0] < 2 * f + 3:
            # Too few models for Krum's guarantee: the coordinate-wise median still is
            # robust to a minority and needs no minimum.
            name = "median"
        # Row 0 is our own model: centered_clip clips around it.
        return agg.aggregate(name, X, w, trim=self.cfg.trim, f=f)

    def state_dict(self) -> dict[str, Any]:
        return {"seen_at_snapshot": self._seen_at_snapshot,
                "typical_distance": self._typical_distance}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen_at_snapshot = int(state.get("seen_at_snapshot", 0))
        self._typical_distance = float(state.get("typical_distance", 0.0))


def _count(report: MergeReport, peer: PeerModel, reason: str) -> None:
    report.rejected[reason] = report.rejected.get(reason, 0) + 1
    report.rejected_senders.append(peer.sender)
