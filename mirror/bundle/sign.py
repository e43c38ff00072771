"""Ed25519 keys and the signature of a bundle's manifest.

What is signed is a short statement naming the manifest's sha256 and length (the manifest
of a large bundle is streamed to disk, never held whole in memory), so the signature
covers every byte of the manifest, and through it every path, length and digest of the
bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mirror.errors import ConfigError

STATEMENT = b"pypi-mirror bundle manifest v1\n"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def statement(manifest_sha256: str, manifest_size: int) -> bytes:
    return STATEMENT + f"{manifest_sha256} {manifest_size}\n".encode()


def keygen(path: Path) -> str:
    """Write a new pair: ``path`` (PKCS8 PEM, mode 0600) and ``path.pub``; the key id.

    Refuses to overwrite either file (FileExistsError)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_path = path.with_name(path.name + ".pub")
    if pub_path.exists():
        raise FileExistsError(pub_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        path.unlink()
        raise
    try:
        os.write(fd, public)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_id(private.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the signing key: {exc.strerror or exc}", source=str(path)
        ) from exc
    try:
        if len(data) == 32:
            return Ed25519PrivateKey.from_private_bytes(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "not an unencrypted Ed25519 private key (make one with `pypi-mirror keygen`)",
            source=str(path),
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("not an Ed25519 private key", source=str(path))
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the trusted key: {exc.strerror or exc}", source=str(path)
        ) from exc
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "not an Ed25519 public key (the .pub file `pypi-mirror keygen` writes)",
            source=str(path),
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("not an Ed25519 public key", source=str(path))
    return key


@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes

    def dump(self) -> bytes:
        return json.dumps({"keyid": self.key_id, "sig": self.signature.hex()}).encode() + b"\n"

    @classmethod
    def load(cls, data: bytes) -> Signature | None:
        try:
            raw = json.loads(data)
            return cls(str(raw["keyid"]), bytes.fromhex(str(raw["sig"])))
        except (ValueError, KeyError, TypeError):
            return None


def sign(key: Ed25519PrivateKey, manifest_sha256: str, manifest_size: int) -> Signature:
    return Signature(key_id(key.public_key()), key.sign(statement(manifest_sha256, manifest_size)))


def signed_by(
    signature: Signature, keys: list[Ed25519PublicKey], manifest_sha256: str, manifest_size: int
) -> str | None:
    """The id of the trusted key that made ``signature`` over this manifest, or None."""
    message = statement(manifest_sha256, manifest_size)
    for key in keys:
        try:
            key.verify(signature.signature, message)
        except InvalidSignature:
            continue
        return key_id(key)
    return None
