"""Security tests: the real server on loopback, real clients, real keys (docs/SECURITY.md)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.fixtures import reference_server, shared_server, start_server  # noqa: F401

SECRET = "test-secret-0123456789abcdef-0123456789abcdef"  # 45 bytes: HS256 needs 32


def hs256(user: str, ttl: float = 300, secret: str = SECRET, **claims: object) -> str:
    """A token the server started with ``--jwt-secret SECRET`` accepts (or, with ttl < 0, not)."""
    return jwt.encode(
        {"sub": user, "exp": int(time.time() + ttl), **claims}, secret, algorithm="HS256"
    )


class RsaKeys:
    """An RSA key pair on disk: the server gets public.pem, the token minter private.pem."""

    def __init__(self, folder: Path) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = folder / "private.pem"
        self.public_pem = folder / "public.pem"
        self.private_pem.write_bytes(
            self.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.public_pem.write_bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, user: str, ttl: float = 300, **claims: object) -> str:
        return jwt.encode(
            {"sub": user, "exp": int(time.time() + ttl), **claims}, self.private, algorithm="RS256"
        )


@pytest.fixture(scope="session")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> RsaKeys:
    return RsaKeys(tmp_path_factory.mktemp("keys"))
