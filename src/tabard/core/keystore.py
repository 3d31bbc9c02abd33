"""The master key that encrypts private keys at rest (AES-256-GCM).

Taken from `TABARD_MASTER_KEY` or, on the embedded defaults, a 0600 file created on first boot.
Losing it makes every encrypted key unreadable: back it up with the database.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class KeyStore:
    """Encrypts and decrypts small secrets under the master key."""

    def __init__(self, master_key: bytes) -> None:
        # Derive a fixed-size AES key so any sufficiently long operator secret works.
        self._aead = AESGCM(hashlib.sha256(b"tabard-master-key:" + master_key).digest())

    def encrypt(self, plaintext: bytes, associated_data: bytes = b"") -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, sealed: bytes, associated_data: bytes = b"") -> bytes:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, associated_data)

    def check(self) -> None:
        """Raise if the key cannot round-trip a value (readiness probe)."""
        probe = os.urandom(16)
        if self.decrypt(self.encrypt(probe, b"probe"), b"probe") != probe:
            raise RuntimeError("master key round-trip failed")
