"""GitHub webhook signatures: HMAC-SHA256 over the raw body, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

PREFIX = "sha256="


def signature_for(body: bytes, secret: bytes) -> str:
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secrets: Iterable[bytes]) -> bool:
    """True when ``header`` is the signature of ``body`` under any accepted secret."""
    if not header or not header.startswith(PREFIX):
        return False
    given = header.strip().encode("ascii", "replace")
    matched = False
    for secret in secrets:  # check every secret, so timing does not tell which one matched
        matched |= hmac.compare_digest(given, signature_for(body, secret).encode())
    return matched
