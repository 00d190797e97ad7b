"""The binary federation update: a framed JSON header, raw tensors, an Ed25519 signature.

Layout (integers little-endian)::

    b"SLFU" | u8 format version | u32 header length | header (msgspec JSON)
            | tensor bytes (in manifest order, back to back) | 64-byte signature

The signature covers every byte before it, the header's ``federation`` id included, so
an update is bound to the federation it was published in: replayed on another topic it
still verifies, and :mod:`.verify` rejects it as ``wrong_federation``.  :func:`decode`
checks the framing and every bound but does *not* verify the signature: :mod:`.verify`
does, so that each reject is counted under its own reason.

>>> key = Ed25519PrivateKey.generate()
>>> upd = Update(sender="a", version=1, samples=10, labels=[0, "x"], timestamp=1.0,
...              nonce=new_nonce(), n_features=2, hidden=(4,),
...              params={"head.bias": torch.ones(2), "scaler.mean": torch.zeros(2, dtype=torch.float64)})
>>> signed = decode(encode(upd, key, float16=True))
>>> signed.verify(key.public_key()), signed.update.labels, signed.update.params["scaler.mean"].dtype
(True, [0, 'x'], torch.float64)
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Annotated

import msgspec
import numpy as np
import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAGIC = b"SLFU"
FORMAT_VERSION = 2
"""2: the header carries the (signed) federation id."""
SIGNATURE_BYTES = 64
NONCE_BYTES = 16
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 64
MAX_ELEMENTS = 50_000_000
# A top-k tensor of a few bytes expands to its dense shape: cap the sum too, so one
# message cannot make a reader allocate 64 x 50M floats.
MAX_TOTAL_ELEMENTS = 100_000_000
MAX_DIMS = 8
_PREFIX = struct.Struct("<4sBI")
_F16_MAX = 65504.0

# original dtype name -> (torch dtype, encodings allowed for it)
_DTYPES: dict[str, tuple[torch.dtype, frozenset[str]]] = {
    "float32": (torch.float32, frozenset({"f32", "f16", "topk32", "topk16"})),
    "float64": (torch.float64, frozenset({"f64"})),
    "int64": (torch.int64, frozenset({"i64"})),
    "int32": (torch.int32, frozenset({"i64"})),
}
_DTYPE_NAMES = {dt: name for name, (dt, _) in _DTYPES.items()}
# wire numpy dtype and bytes per element of the dense encodings
_DENSE = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "f64": np.dtype("<f8"), "i64": np.dtype("<i8")}
_TOPK_VALUES = {"topk32": np.dtype("<f4"), "topk16": np.dtype("<f2")}
_INDEX = np.dtype("<i4")

_NonNeg = Annotated[int, msgspec.Meta(ge=0)]
_Pos = Annotated[int, msgspec.Meta(ge=1)]


class MalformedUpdate(ValueError):
    """The bytes are not a well-formed update (the message is the one-line reason)."""


class _Tensor(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    shape: Annotated[list[_NonNeg], msgspec.Meta(max_length=MAX_DIMS)]
    dtype: str
    encoding: str
    offset: _NonNeg
    length: _NonNeg


class _Header(msgspec.Struct, forbid_unknown_fields=True):
    sender: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    version: _NonNeg
    samples: _NonNeg
    labels: list[int | str]
    timestamp: float
    nonce: Annotated[bytes, msgspec.Meta(min_length=NONCE_BYTES, max_length=NONCE_BYTES)]
    n_features: _Pos
    hidden: list[_Pos]
    base_version: _NonNeg | None
    federation: Annotated[str, msgspec.Meta(max_length=256)]
    tensors: Annotated[list[_Tensor], msgspec.Meta(max_length=MAX_TENSORS)]


_HEADER_DECODER = msgspec.json.Decoder(_Header)
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, eq=False)
class Update:
    """One peer's model update; ``base_version`` None means ``params`` are complete.

    Otherwise every tensor in ``params`` is a delta on that earlier version of the same
    sender (see :func:`apply_delta`).
    """

    sender: str
    version: int
    samples: int
    labels: list[int | str]
    timestamp: float
    nonce: bytes
    n_features: int
    hidden: tuple[int, ...]
    params: dict[str, torch.Tensor]
    base_version: int | None = None
    federation: str = ""        # the federation id it is published in (signed)


@dataclass(frozen=True, eq=False)
class Signed:
    """A decoded, not yet verified, update with the bytes its signature covers."""

    update: Update
    signed: bytes
    signature: bytes

    def verify(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(self.signature, self.signed)
        except InvalidSignature:
            return False
        return True


def new_nonce() -> bytes:
    """16 random bytes for :attr:`Update.nonce`.

    >>> len(new_nonce())
    16
    """
    return os.urandom(NONCE_BYTES)


def encode(update: Update, key: Ed25519PrivateKey, *, float16: bool = False,
           topk: float | None = None) -> bytes:
    """Serialise and sign ``update``.

    ``float16`` halves float32 params (a tensor whose values exceed the float16 range
    still travels as float32); float64 and integer tensors always travel exactly.
    ``topk=f`` (needs ``base_version``) sends only the ``ceil(f * numel)`` largest-magnitude
    entries of each float32 param.

    >>> key = Ed25519PrivateKey.generate()
    >>> upd = Update("a", 2, 5, [0, 1], 1.0, new_nonce(), 1, (2,), {"w": torch.arange(10.0)}, base_version=1)
    >>> decode(encode(upd, key, topk=0.2)).update.params["w"].tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0, 9.0]
    """
    if topk is not None:
        if update.base_version is None:
            raise ValueError("topk needs update.base_version (it only makes sense for a delta)")
        if not 0.0 < topk <= 1.0:
            raise ValueError(f"topk must be in (0, 1], got {topk}")
    if len(update.params) > MAX_TENSORS:
        raise ValueError(f"{len(update.params)} tensors, at most {MAX_TENSORS} allowed")
    manifest: list[_Tensor] = []
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in update.params.items():
        meta, raw = _encode_tensor(name, tensor, float16, topk)
        manifest.append(_Tensor(name=name, shape=list(tensor.shape), dtype=meta[0],
                                encoding=meta[1], offset=offset, length=len(raw)))
        chunks.append(raw)
        offset += len(raw)
    header = _Header(sender=update.sender, version=update.version, samples=update.samples,
                     labels=list(update.labels), timestamp=update.timestamp, nonce=update.nonce,
                     n_features=update.n_features, hidden=list(update.hidden),
                     base_version=update.base_version, federation=update.federation,
                     tensors=manifest)
    try:
        head = _ENCODER.encode(header)
        # Round-trip through the reader's schema: a bad field (short nonce, bool label,
        # NaN timestamp) fails here, at the sender, not silently at every peer.
        _HEADER_DECODER.decode(head)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"cannot encode update: {exc}") from None
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(head)} bytes, at most {MAX_HEADER_BYTES} allowed")
    body = b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)), head, *chunks])
    return body + key.sign(body)


def _encode_tensor(name: str, tensor: torch.Tensor, float16: bool,
                   topk: float | None) -> tuple[tuple[str, str], bytes]:
    t = tensor.detach().to("cpu").contiguous()
    dtype = _DTYPE_NAMES.get(t.dtype)
    if dtype is None:
        raise ValueError(f"param {name!r}: unsupported dtype {t.dtype}")
    if t.numel() > MAX_ELEMENTS:
        raise ValueError(f"param {name!r}: {t.numel()} elements, at most {MAX_ELEMENTS} allowed")
    if dtype == "float64":
        return (dtype, "f64"), t.numpy().astype("<f8").tobytes()
    if dtype != "float32":
        return (dtype, "i64"), t.numpy().astype("<i8").tobytes()
    flat = t.reshape(-1)
    if topk is not None:
        k = min(flat.numel(), math.ceil(topk * flat.numel()))
        idx = torch.topk(flat.abs(), k, sorted=False).indices.sort().values
        values = flat[idx]
        half = float16 and _fits_f16(values)
        raw = idx.numpy().astype(_INDEX).tobytes() + values.numpy().astype("<f2" if half else "<f4").tobytes()
        return (dtype, "topk16" if half else "topk32"), raw
    if float16 and _fits_f16(flat):
        return (dtype, "f16"), flat.numpy().astype("<f2").tobytes()
    return (dtype, "f32"), flat.numpy().astype("<f4").tobytes()


def _fits_f16(t: torch.Tensor) -> bool:
    # inf and NaN survive the cast; only a finite value that would turn into inf is lost
    return not bool(((t.abs() > _F16_MAX) & torch.isfinite(t)).any())


def _frame(data: bytes) -> tuple[_Header, memoryview]:
    """Check the framing and header; return the header and the tensor section."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedUpdate(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < _PREFIX.size + SIGNATURE_BYTES:
        raise MalformedUpdate(f"truncated: {len(view)} bytes")
    magic, fmt, hlen = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise MalformedUpdate("bad magic (not a federation update)")
    if fmt != FORMAT_VERSION:
        raise MalformedUpdate(f"unsupported format version {fmt}")
    if hlen > MAX_HEADER_BYTES:
        raise MalformedUpdate(f"header of {hlen} bytes exceeds {MAX_HEADER_BYTES}")
    start = _PREFIX.size + hlen
    if start + SIGNATURE_BYTES > len(view):
        raise MalformedUpdate("truncated: header runs past the end")
    try:
        header = _HEADER_DECODER.decode(view[_PREFIX.size:start])
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:   # bad UTF-8 is not a MsgspecError
        raise MalformedUpdate(f"bad header: {exc}") from None
    if not math.isfinite(header.timestamp):
        raise MalformedUpdate("bad header: timestamp is not finite")
    return header, view[start:len(view) - SIGNATURE_BYTES]


def peek_sender(data: bytes) -> str:
    """The claimed sender id, after checking only the framing and header.

    >>> key = Ed25519PrivateKey.generate()
    >>> peek_sender(encode(Update("a", 1, 0, [], 0.0, new_nonce(), 1, (), {}), key))
    'a'
    """
    return _frame(data)[0].sender


def verify_signature(data: bytes, key: Ed25519PublicKey) -> bool:
    """Whether the last 64 bytes of ``data`` sign everything before them with ``key``."""
    if len(data) < SIGNATURE_BYTES:
        return False
    try:
        key.verify(bytes(data[-SIGNATURE_BYTES:]), bytes(data[:-SIGNATURE_BYTES]))
    except InvalidSignature:
        return False
    return True


def decode(data: bytes) -> Signed:
    """Parse ``data`` (signature not verified); :class:`MalformedUpdate` on any bad input.

    >>> decode(b"SLFU" + bytes(100))
    Traceback (most recent call last):
    ...
    stream_learner.federation.codec.MalformedUpdate: unsupported format version 0
    """
    header, section = _frame(data)
    params: dict[str, torch.Tensor] = {}
    expected = 0
    total = 0
    for spec in header.tensors:
        if spec.name in params:
            raise MalformedUpdate(f"duplicate tensor {spec.name!r}")
        if spec.offset != expected:
            raise MalformedUpdate(f"tensor {spec.name!r}: offset {spec.offset}, expected {expected}")
        if spec.offset + spec.length > len(section):
            raise MalformedUpdate(f"tensor {spec.name!r}: bytes run past the end")
        numel = math.prod(spec.shape)
        if numel > MAX_ELEMENTS:
            raise MalformedUpdate(f"tensor {spec.name!r}: {numel} elements exceeds {MAX_ELEMENTS}")
        total += numel
        if total > MAX_TOTAL_ELEMENTS:
            raise MalformedUpdate(f"tensors hold more than {MAX_TOTAL_ELEMENTS} elements in all")
        params[spec.name] = _decode_tensor(spec, numel, section, header.base_version is not None)
        expected = spec.offset + spec.length
    if expected != len(section):
        raise MalformedUpdate(f"{len(section) - expected} stray bytes after the tensors")
    update = Update(sender=header.sender, version=header.version, samples=header.samples,
                    labels=header.labels, timestamp=header.timestamp, nonce=header.nonce,
                    n_features=header.n_features, hidden=tuple(header.hidden), params=params,
                    base_version=header.base_version, federation=header.federation)
    view = memoryview(data).cast("B")
    return Signed(update, bytes(view[:-SIGNATURE_BYTES]), bytes(view[-SIGNATURE_BYTES:]))


def _decode_tensor(spec: _Tensor, numel: int, section: memoryview, is_delta: bool) -> torch.Tensor:
    known = _DTYPES.get(spec.dtype)
    if known is None:
        raise MalformedUpdate(f"tensor {spec.name!r}: unknown dtype {spec.dtype!r}")
    dtype, encodings = known
    if spec.encoding not in encodings:
        raise MalformedUpdate(f"tensor {spec.name!r}: encoding {spec.encoding!r} invalid for {spec.dtype}")
    raw = section[spec.offset:spec.offset + spec.length]
    wire = _DENSE.get(spec.encoding)
    if wire is not None:
        if spec.length != numel * wire.itemsize:
            raise MalformedUpdate(f"tensor {spec.name!r}: {spec.length} bytes do not match "
                                  f"shape {spec.shape}")
        # astype copies: the result is aligned, writable and owns its memory
        array = np.frombuffer(raw, dtype=wire).astype(wire.newbyteorder("="))
        return torch.from_numpy(array).to(dtype).reshape(spec.shape)
    if not is_delta:
        raise MalformedUpdate(f"tensor {spec.name!r}: top-k encoding in a full (non-delta) update")
    values_dt = _TOPK_VALUES[spec.encoding]
    per = _INDEX.itemsize + values_dt.itemsize
    k, rest = divmod(spec.length, per)
    if rest or k > numel:
        raise MalformedUpdate(f"tensor {spec.name!r}: {spec.length} bytes are not a top-k "
                              f"of shape {spec.shape}")
    idx = np.frombuffer(raw[:k * _INDEX.itemsize], dtype=_INDEX).astype(np.int64)
    values = np.frombuffer(raw[k * _INDEX.itemsize:], dtype=values_dt).astype(np.float32)
    # strictly increasing indices: in range, no duplicates, one encoding per top-k set
    if k and (idx[0] < 0 or idx[-1] >= numel or (k > 1 and not bool(np.all(np.diff(idx) > 0)))):
        raise MalformedUpdate(f"tensor {spec.name!r}: top-k indices out of range or not increasing")
    dense = torch.zeros(numel, dtype=torch.float32)
    dense[torch.from_numpy(idx)] = torch.from_numpy(values)
    return dense.reshape(spec.shape)


def apply_delta(base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``base + delta`` per tensor (in the base's dtype); tensors absent from ``delta`` are kept.

    ValueError when ``delta`` names a tensor ``base`` lacks or shapes differ.

    >>> apply_delta({"w": torch.ones(2), "n": torch.tensor(3)}, {"w": torch.tensor([0.5, 0.0])})["w"].tolist()
    [1.5, 1.0]
    """
    out = dict(base)
    for name, d in delta.items():
        b = base.get(name)
        if b is None:
            raise ValueError(f"delta has tensor {name!r} that the base lacks")
        if b.shape != d.shape:
            raise ValueError(f"delta {name!r} has shape {tuple(d.shape)}, base {tuple(b.shape)}")
        out[name] = b + d.to(b.dtype)
    return out
