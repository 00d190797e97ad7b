"""Who may send what: authenticate, de-duplicate and sanity-check peers' updates.

Order matters: before the signature check only the claimed sender id and the raw
bytes are used, and a rejected update never touches the replay state.

>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> from stream_learner.federation.codec import encode, new_nonce
>>> from stream_learner.model import MLP
>>> key = Ed25519PrivateKey.generate()
>>> v = Verifier({"b": key.public_key()}, self_id="a", max_age_s=60, n_features=3, hidden=(4,))
>>> upd = Update("b", 1, 8, [0, 1], 100.0, new_nonce(), 3, (4,), MLP(3, (4,), 2).state_dict())
>>> data = encode(upd, key)
>>> type(v.check(data, now=101.0)).__name__
'Update'
>>> v.check(data, now=101.0)
Rejected(reason='replayed_nonce', detail="nonce from 'b' already seen")
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .reasons import REASONS
from .codec import MalformedUpdate, Update, apply_delta, decode, peek_sender, verify_signature

MAX_FUTURE_S = 60.0


@dataclass(frozen=True)
class Rejected:
    """Why an update was dropped: ``reason`` is one of :data:`REASONS`."""

    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown reject reason {self.reason!r}")


class Verifier:
    """Turns raw topic messages into trusted, dense :class:`Update` objects.

    ``n_features=None`` accepts any input width (the local model is not built yet) as
    long as the sender's shapes agree with its own header; ``hidden`` must match ours.
    ``federation_id`` is the federation we read: an authentic update signed for another
    one is a replay from elsewhere (``wrong_federation``).  ``max_classes`` and
    ``max_label_length`` are the same bounds as the event decoder's.
    """

    def __init__(self, allowlist: dict[str, Ed25519PublicKey], *, self_id: str, max_age_s: float,
                 n_features: int | None, hidden: tuple[int, ...], nonce_cache: int = 65536,
                 federation_id: str = "", max_classes: int = 1000,
                 max_label_length: int = 256) -> None:
        self.allowlist = dict(allowlist)
        self.self_id = self_id
        self.max_age_s = max_age_s
        self.n_features = n_features
        self.hidden = tuple(hidden)
        self.nonce_cache = max(1, nonce_cache)
        self.federation_id = federation_id
        self.max_classes = max_classes
        self.max_label_length = max_label_length
        self._nonces: dict[str, OrderedDict[bytes, None]] = {}
        self._last: dict[str, Update] = {}     # last accepted dense update per sender
        # Last accepted version per sender, kept across restarts (the checkpoint): versions
        # only grow, so this alone rejects any earlier update re-sent after our restart.
        self._versions: dict[str, int] = {}

    def last_version(self, sender: str) -> int | None:
        return self._versions.get(sender)

    def state_dict(self) -> dict[str, dict[str, int]]:
        """The replay state as plain data: ``{"versions": {sender: last accepted version}}``."""
        return {"versions": dict(self._versions)}

    def load_state_dict(self, state: object) -> int:
        """Restore :meth:`state_dict`'s versions (never lowering one we hold); entries that
        are not ``str -> int >= 0`` are skipped.  Returns how many were skipped."""
        versions = state.get("versions") if isinstance(state, dict) else None
        if not isinstance(versions, dict):
            return 0 if versions is None else 1
        skipped = 0
        for sender, version in versions.items():
            if (not isinstance(sender, str) or isinstance(version, bool) or
                    not isinstance(version, int) or version < 0):
                skipped += 1
                continue
            self._versions[sender] = max(version, self._versions.get(sender, version))
        return skipped

    def check(self, data: bytes, now: float) -> Update | Rejected | None:
        """The dense update, a :class:`Rejected`, or None for our own echoed update."""
        try:
            sender = peek_sender(data)
        except MalformedUpdate as exc:
            return Rejected("malformed", str(exc))
        if sender == self.self_id:
            return None
        key = self.allowlist.get(sender)
        if key is None:
            return Rejected("unknown_peer", f"sender {sender!r} is not in the allowlist")
        if not verify_signature(data, key):
            return Rejected("bad_signature", f"signature does not match the key of {sender!r}")
        # authentic from here on; still bounded, since a peer can be buggy or compromised
        try:
            update = decode(data).update
        except MalformedUpdate as exc:
            return Rejected("malformed", str(exc))
        if update.federation != self.federation_id:
            return Rejected("wrong_federation", f"signed for federation {update.federation!r:.80}, "
                                                f"this is {self.federation_id!r}")
        verdict = self._screen(update, now)
        if isinstance(verdict, Rejected):
            return verdict
        self._remember(verdict)
        return verdict

    def _screen(self, update: Update, now: float) -> Update | Rejected:
        sender = update.sender
        if update.nonce in self._nonces.get(sender, ()):
            return Rejected("replayed_nonce", f"nonce from {sender!r} already seen")
        last = self._last.get(sender)
        held = self._versions.get(sender)
        if held is not None and update.version <= held:
            return Rejected("replayed_nonce",
                            f"version {update.version} from {sender!r} is not newer than {held}")
        if not now - self.max_age_s <= update.timestamp <= now + MAX_FUTURE_S:
            return Rejected("stale", f"update is {now - update.timestamp:.1f}s old; accepted "
                                     f"{-MAX_FUTURE_S:g}s to {self.max_age_s:g}s")
        labels = self._label_problem(update)
        if labels is not None:
            return labels
        problem = self._header_problem(update)
        if problem is None and update.base_version is None:
            problem = _shape_problem(update)
        if problem is not None:
            return Rejected("incompatible", problem)
        bad = _non_finite(update.params)
        if bad is not None:
            return Rejected("non_finite", f"tensor {bad!r} holds NaN or inf")
        if update.base_version is None:
            return update
        if last is None or last.version != update.base_version:
            held = "nothing" if last is None else f"version {last.version}"
            return Rejected("missing_base", f"delta on version {update.base_version} of {sender!r}; "
                                            f"we hold {held}")
        try:
            dense = replace(update, params=apply_delta(last.params, update.params), base_version=None)
        except ValueError as exc:
            return Rejected("incompatible", str(exc))
        problem = _shape_problem(dense)
        if problem is not None:
            return Rejected("incompatible", problem)
        bad = _non_finite(dense.params)   # base + delta can overflow to inf
        if bad is not None:
            return Rejected("non_finite", f"tensor {bad!r} holds NaN or inf after applying the delta")
        return dense

    def _header_problem(self, update: Update) -> str | None:
        if self.n_features is not None and update.n_features != self.n_features:
            return f"n_features {update.n_features}, ours is {self.n_features}"
        if update.hidden != self.hidden:
            return f"hidden {update.hidden}, ours is {self.hidden}"
        if len(set(update.labels)) != len(update.labels):
            return "duplicate labels in the label map"
        return None

    def _label_problem(self, update: Update) -> Rejected | None:
        if len(update.labels) > self.max_classes:
            return Rejected("too_many_classes", f"{len(update.labels)} labels from {update.sender!r}; "
                                                f"model.max_classes is {self.max_classes}")
        for label in update.labels:
            if isinstance(label, str) and len(label) > self.max_label_length:
                return Rejected("bad_label", f"a label of {len(label)} characters from "
                                             f"{update.sender!r}; model.max_label_length is "
                                             f"{self.max_label_length}")
        return None

    def _remember(self, update: Update) -> None:
        nonces = self._nonces.setdefault(update.sender, OrderedDict())
        nonces[update.nonce] = None
        while len(nonces) > self.nonce_cache:
            nonces.popitem(last=False)
        self._last[update.sender] = update
        self._versions[update.sender] = update.version


def expected_shapes(n_features: int, hidden: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of :class:`~stream_learner.model.MLP`; -1 marks the head's free capacity.

    >>> expected_shapes(3, (4,))["body.0.weight"], expected_shapes(3, (4,))["head.weight"]
    ((4, 3), (-1, 4))
    """
    shapes: dict[str, tuple[int, ...]] = {"n_classes_t": (), "scaler.count": (),
                                          "scaler.mean": (n_features,), "scaler.m2": (n_features,)}
    width = n_features
    for i, h in enumerate(hidden):
        shapes[f"body.{2 * i}.weight"] = (h, width)   # 2 * i: a ReLU sits between Linears
        shapes[f"body.{2 * i}.bias"] = (h,)
        width = h
    shapes["head.weight"] = (-1, width)
    shapes["head.bias"] = (-1,)
    return shapes


def _shape_problem(update: Update) -> str | None:
    expected = expected_shapes(update.n_features, update.hidden)
    params = update.params
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        return f"state_dict mismatch: missing {missing}, unexpected {extra}"
    for name, shape in expected.items():
        got = tuple(params[name].shape)
        if len(got) != len(shape) or any(e != -1 and g != e for g, e in zip(got, shape)):
            return f"tensor {name!r} has shape {got}, expected {shape}"
        if params[name].is_floating_point() != (name != "n_classes_t"):
            return f"tensor {name!r} has dtype {params[name].dtype}"
    capacity = params["head.weight"].shape[0]
    if params["head.bias"].shape[0] != capacity or capacity < max(1, len(update.labels)):
        return (f"head of {capacity} rows (bias {params['head.bias'].shape[0]}) "
                f"for {len(update.labels)} labels")
    return None


def _non_finite(params: dict[str, torch.Tensor]) -> str | None:
    for name, t in params.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None
