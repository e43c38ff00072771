"""Streaming verification of a download against what was promised (length and digests)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mirror.errors import DigestMismatch, LengthMismatch

SUPPORTED = ("sha256", "blake2b_256", "sha512", "sha384")


def new_hasher(algorithm: str) -> Any:
    if algorithm == "blake2b_256":
        return hashlib.blake2b(digest_size=32)
    return hashlib.new(algorithm)


@dataclass
class StreamVerifier:
    """Feed it every chunk, then ``finish()``: raises an IntegrityError on any mismatch."""

    what: str
    expected_digests: Mapping[str, str]
    expected_size: int | None = None
    size: int = 0
    _hashers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for algorithm in self.expected_digests:
            if algorithm in SUPPORTED:
                self._hashers[algorithm] = new_hasher(algorithm)
        self._hashers.setdefault("sha256", hashlib.sha256())

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise LengthMismatch(self.what, self.expected_size, self.size)
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def digest(self, algorithm: str) -> str:
        value: str = self._hashers[algorithm].hexdigest()
        return value

    def finish(self) -> dict[str, str]:
        if self.expected_size is not None and self.size != self.expected_size:
            raise LengthMismatch(self.what, self.expected_size, self.size)
        actual = {name: hasher.hexdigest() for name, hasher in self._hashers.items()}
        for algorithm, expected in self.expected_digests.items():
            if algorithm in self._hashers and actual[algorithm] != expected.lower():
                raise DigestMismatch(self.what, algorithm, expected.lower(), actual[algorithm])
        return actual
