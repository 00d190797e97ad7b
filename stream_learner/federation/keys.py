"""Ed25519 keys: a PEM private key per daemon, one-line base64 public keys for peers.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> key_path, pub_path = generate(d, "alpha")
>>> oct(key_path.stat().st_mode & 0o777), len(pub_path.read_text().strip())
('0o600', 44)
>>> public_text(load_private(key_path)) == public_text(load_public(pub_path))
True
>>> sorted(load_allowlist(None, d))
['alpha']
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PKCS8 PEM, mode 0600) and ``NAME.pub`` (base64 line); never overwrites."""
    directory = Path(directory)
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (key_path, pub_path):
        # check both first: a half-written pair (new .key, stale .pub) would be worse than none
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite a key")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # O_EXCL closes the race with a concurrent writer; the mode is set at creation so the
    # secret is never readable by others, not even for an instant
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)   # umask can only narrow; make it exact
        fh.write(pem)
    with open(pub_path, "x", encoding="ascii") as fh:
        fh.write(public_text(key.public_key()) + "\n")
    return key_path, pub_path


def public_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The raw 32-byte public key in base64 (44 characters)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return base64.b64encode(key.public_bytes(*_RAW)).decode("ascii")


def load_private(path: str | Path) -> Ed25519PrivateKey:
    """An unencrypted PEM Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public(text_or_path: str | Path) -> Ed25519PublicKey:
    """A public key from base64 raw key text or from a ``.pub`` file holding that text.

    >>> load_public("not a key")
    Traceback (most recent call last):
    ...
    ValueError: not a base64 Ed25519 public key nor a readable file: 'not a key'
    """
    if isinstance(text_or_path, Path):
        return _from_b64(_read(text_or_path), str(text_or_path))
    key = _b64(text_or_path)
    if key is not None:
        return key
    path = Path(text_or_path)
    if path.is_file():
        return _from_b64(_read(path), str(path))
    raise ValueError(f"not a base64 Ed25519 public key nor a readable file: {text_or_path!r}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read public key ({exc})") from None


def _from_b64(text: str, where: str) -> Ed25519PublicKey:
    key = _b64(text)
    if key is None:
        raise ValueError(f"{where}: not a base64 32-byte Ed25519 public key")
    return key


def _b64(text: str) -> Ed25519PublicKey | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw) if len(raw) == 32 else None
    except (binascii.Error, ValueError):
        return None


def load_allowlist(peers: Mapping[str, str] | None, directory: Path | None) -> dict[str, Ed25519PublicKey]:
    """Peer id -> public key from a config mapping (base64 or path) and/or ``directory/*.pub``.

    >>> key = Ed25519PrivateKey.generate()
    >>> list(load_allowlist({"beta": public_text(key)}, None))
    ['beta']
    >>> load_allowlist({"beta": "garbage"}, None)
    Traceback (most recent call last):
    ...
    ValueError: peer 'beta': not a base64 Ed25519 public key nor a readable file: 'garbage'
    """
    keys: dict[str, Ed25519PublicKey] = {}
    if directory is not None:
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"peer key directory {directory} does not exist")
        for path in sorted(directory.glob("*.pub")):
            try:
                keys[path.stem] = load_public(path)
            except ValueError as exc:
                raise ValueError(f"peer {path.stem!r}: {exc}") from None
    for peer, value in (peers or {}).items():
        try:
            key = load_public(value)
        except ValueError as exc:
            raise ValueError(f"peer {peer!r}: {exc}") from None
        if peer in keys and public_text(keys[peer]) != public_text(key):
            # two sources disagree: trusting either silently could let the wrong one in
            raise ValueError(f"peer {peer!r}: config key differs from {directory}/{peer}.pub")
        keys[peer] = key
    return keys
