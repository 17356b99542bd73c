"""Counter-based randomness addressed by (run seed, random stream, site address).

A sampled value depends only on *which* site of *which* particle stream is drawn, never on the
order in which particles or sites happen to execute. That is what makes a seeded run give the same
result on the local asyncio runtime and on Ray (where calls complete in any order), and what makes
replay and resumption exact.

A particle's random stream is its `particle_id`: resampled offspring get fresh ids, so two copies of
one ancestor share their replayed past and draw independent futures.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

_TWO_POW_53 = 2.0**-53


def derive_key(seed: int | None, stream: int | str, address: str) -> bytes:
    """The 16-byte key of one site: a hash of the run seed, the particle's stream and the address."""
    text = f"{seed}|{stream}|{address}".encode()
    return hashlib.blake2b(text, digest_size=16).digest()


class SiteRandom:
    """A small random stream for one sample site: 64-bit words w₁ = key[8:16] (the half of the
    site's key that `seed()` does not use) and w_k = blake2b(key ‖ k) for k ≥ 2, uniforms w >> 11.

    Enough for inverse-CDF sampling of finite distributions (one uniform each, and the first costs
    no hash beyond the key's);
    `generator()` gives a numpy Generator for distributions that need more, and `seed()` a 63-bit
    integer for backends that take an integer seed (LLM sampling, the response-cache key).
    """

    __slots__ = ("key", "_counter")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._counter = 0

    @classmethod
    def for_site(cls, seed: int | None, stream: int | str, address: str) -> "SiteRandom":
        return cls(derive_key(seed, stream, address))

    def _next64(self) -> int:
        self._counter += 1
        if self._counter == 1:
            return int.from_bytes(self.key[8:16], "little")
        digest = hashlib.blake2b(self.key + struct.pack("<Q", self._counter), digest_size=8).digest()
        return struct.unpack("<Q", digest)[0]

    def random(self) -> float:
        """A uniform float in [0, 1) with 53 random bits."""
        return (self._next64() >> 11) * _TWO_POW_53

    def seed(self) -> int:
        """A 63-bit integer seed derived from the key (stable: does not advance the stream)."""
        return int.from_bytes(self.key[:8], "little") >> 1

    def generator(self) -> np.random.Generator:
        return np.random.default_rng(int.from_bytes(self.key, "little"))


class UnseededRandom(SiteRandom):
    """Fresh OS entropy, for a program called directly, outside any policy or `seed` handler."""

    def __init__(self) -> None:
        import os

        super().__init__(os.urandom(16))
