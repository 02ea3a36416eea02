"""Who is on the other end: the Authenticator seam.

The core only asks "which user does this token name?" so that the security issue
can add RS256, room grants and key rotation behind the same call. Two
implementations live here: HS256 JWTs (PyJWT) and the insecure development mode.
"""

from __future__ import annotations

import base64
import logging
import re
from typing import Protocol

import jwt
import msgspec

USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
log = logging.getLogger("rtbench.server")


class AuthError(Exception):
    """The token names no user we accept; the message says why, for the client."""


class Authenticator(Protocol):
    """Turns a token into a user id, or raises AuthError."""

    name: str

    def authenticate(self, token: str | None) -> str: ...


def _checked_user(user: object) -> str:
    if not isinstance(user, str) or not USER_ID.match(user):
        raise AuthError("user id must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
    return user


class JwtHs256Authenticator:
    """Verifies HS256 JWTs signed with a shared secret; ``sub`` is the user id."""

    name = "jwt-hs256"

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def authenticate(self, token: str | None) -> str:
        if not token:
            raise AuthError("a token is required (Authorization: Bearer, ?token= or hello.token)")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        return _checked_user(claims.get("sub"))


_claims_decoder = msgspec.json.Decoder(dict)


class InsecureDevAuthenticator:
    """Development only: the token text is the user id, or a JWT's unverified ``sub``."""

    name = "insecure-dev"

    def authenticate(self, token: str | None) -> str:
        if not token:
            raise AuthError("a token is required: in --insecure-dev mode the token is the user id")
        if token.count(".") == 2:  # looks like a JWT: take its sub without checking anything
            payload = token.split(".")[1]
            try:
                claims = _claims_decoder.decode(base64.urlsafe_b64decode(payload + "=" * 4))
            except (ValueError, msgspec.DecodeError):
                raise AuthError("token looks like a JWT but its payload is not JSON") from None
            return _checked_user(claims.get("sub"))
        return _checked_user(token)


def make_authenticator(insecure_dev: bool, jwt_secret: str | None) -> Authenticator:
    """Choose the authenticator; the caller has already refused neither-or-both."""
    if insecure_dev:
        log.warning(
            "rtbench: --insecure-dev: accepting UNSIGNED identities; anyone can be anyone. "
            "Never expose this server beyond your machine."
        )
        return InsecureDevAuthenticator()
    if not jwt_secret:
        raise ValueError("no authenticator configured")
    return JwtHs256Authenticator(jwt_secret)
