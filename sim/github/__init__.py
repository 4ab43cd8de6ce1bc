"""A GitHub Enterprise Server stand-in on loopback: REST under ``/api/v3``, git smart HTTP,
signed webhook deliveries. See ``GitHubSim``."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sim.github.simulator import GitHubSim, SubmittedReview, webhook_headers
from sim.github.state import Delivery, Push, Reaction, RecordedRequest, SentWebhook, SimError

__all__ = [
    "Delivery",
    "GitHubSim",
    "Push",
    "Reaction",
    "RecordedRequest",
    "SentWebhook",
    "SimError",
    "SubmittedReview",
    "generate_app_key",
    "webhook_headers",
]


def generate_app_key(bits: int = 2048) -> tuple[bytes, bytes]:
    """A fresh RSA key pair for a GitHub App: ``(private_pem, public_pem)``, PEM-encoded."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem
