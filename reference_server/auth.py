"""Who is on the other end, and which rooms their token lets them into.

The core asks one question of a token: ``identify(token) -> Identity`` (the user id,
and the token's room grants if it carries any). Everything that decides what a user
may do starts from that identity, never from a field of a frame.

Three authenticators sit behind the seam:

- HS256 JWTs with a shared secret (``--jwt-secret``),
- RS256 JWTs with a public key (``--jwt-public-key FILE``): the token issuer keeps the
  private key, the chat server can verify but never mint,
- ``--insecure-dev``: the token text is the user id (or a JWT's unverified ``sub`` and
  ``rooms``), for a developer's own machine only, and it says so loudly in the log.

Each verifier accepts exactly one algorithm, so a token signed with another one (the
``none`` algorithm, or HS256 with the RSA public key as its secret) is refused.

PyJWT and cryptography are imported when a JWT key is configured, not with this
module: they are a large share of the server's start time, and a restarted server that
listens sooner is a shorter outage for every client (docs/RECOVERY.md).
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from rtbench.bounded import BoundedDict

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_GRANTS = 256  # patterns in one token's `rooms` claim
MAX_ROOM_ID = 128  # characters, as in the protocol
MIN_HS256_SECRET = 32  # bytes: RFC 7518 section 3.2 (a shorter HMAC key can be brute-forced)
MIN_RSA_BITS = 2048
log = logging.getLogger("rtbench.server")


class AuthError(Exception):
    """The token names no user we accept; the message says why, for the client."""


class KeyFileError(Exception):
    """The configured key cannot be used; one line for the operator, exit 2."""


class RoomGrants:
    """The rooms a token may touch: exact names and ``*`` patterns (``team-*``).

    A grant is a ceiling: a token with grants may join, create, read and resume only
    rooms that match one. An exact grant of a private room also counts as an
    invitation to it (that is how a backend adds a user to a private group); a
    pattern never does, so ``*`` is not a key to every private room.
    """

    __slots__ = ("exact", "pattern")

    def __init__(self, grants: tuple[str, ...]) -> None:
        self.exact = frozenset(g for g in grants if "*" not in g)
        wild = [g for g in grants if "*" in g]
        self.pattern = _compile(tuple(wild)) if wild else None

    def allows(self, room: str) -> bool:
        """True when the token may touch ``room`` at all."""
        if room in self.exact:
            return True
        return self.pattern is not None and self.pattern.fullmatch(room) is not None

    def invites(self, room: str) -> bool:
        """True when the token names ``room`` exactly (membership of a private room)."""
        return room in self.exact

    def __repr__(self) -> str:
        wild = self.pattern.pattern if self.pattern is not None else ""
        return f"RoomGrants(exact={sorted(self.exact)}, pattern={wild!r})"


@functools.lru_cache(maxsize=1024)
def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for all the ``*`` patterns of a token (cached: tokens repeat a lot)."""
    parts = ("".join(".*" if c == "*" else re.escape(c) for c in p) for p in patterns)
    return re.compile("|".join(f"(?:{p})" for p in parts), re.S)


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified user: the id the server uses everywhere, and the token's grants."""

    user: str
    grants: RoomGrants | None = None  # None: no `rooms` claim, no ceiling


class Authenticator(Protocol):
    """Turns a token into an Identity, or raises AuthError."""

    name: str

    def identify(self, token: str | None) -> Identity: ...


def _checked_user(user: object) -> str:
    if not isinstance(user, str) or not USER_ID.match(user):
        raise AuthError("user id must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
    return user


def grants_from_claims(claims: dict[str, Any]) -> RoomGrants | None:
    """The ``rooms`` claim as RoomGrants; a malformed one refuses the token."""
    if "rooms" not in claims:
        return None
    rooms = claims["rooms"]
    if not isinstance(rooms, list) or len(rooms) > MAX_GRANTS:
        raise AuthError(f"claim 'rooms' must be a list of at most {MAX_GRANTS} room names")
    for room in rooms:
        if not isinstance(room, str) or not 1 <= len(room) <= MAX_ROOM_ID:
            raise AuthError(f"claim 'rooms' must hold room names of 1-{MAX_ROOM_ID} characters")
    return RoomGrants(tuple(rooms))


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    return Identity(_checked_user(claims.get("sub")), grants_from_claims(claims))


def _missing() -> AuthError:
    return AuthError("a token is required (Authorization: Bearer, ?token= or hello.token)")


VERIFIED_TOKENS = 16384  # verified tokens remembered (oldest forgotten first)


class JwtAuthenticator:
    """Verifies JWTs with one algorithm and one key; ``sub`` and ``exp`` are required.

    A client keeps its token until it expires and presents it again on every reconnect;
    checking an HS256 signature costs ~28 us, a fifth of the server's whole CPU per
    reconnect-and-resume (reports/reconnect-cost.md). So a token that verified is
    remembered, by its exact text (signature included), with its identity and ``exp``:
    the same text again, before ``exp``, is the same identity under the same key (the
    key is fixed for the process's life). Any other text, and the same one once expired,
    is verified in full.
    """

    def __init__(self, key: Any, algorithm: str) -> None:
        import jwt  # only a server that checks JWTs pays for the import

        self._jwt = jwt
        self._key = key  # a prepared key object for RS256, so no PEM is parsed per token
        self._algorithms = [algorithm]
        self.name = f"jwt-{algorithm.lower()}"
        # token -> (identity, exp), the oldest forgotten first
        self._verified: BoundedDict[str, tuple[Identity, float]] = BoundedDict(VERIFIED_TOKENS)

    def identify(self, token: str | None) -> Identity:
        if not token:
            raise _missing()
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:  # PyJWT's rule: expired once exp <= now
                return known[0]
            del self._verified[token]
        identity, exp = self._verify(token)
        self._verified.put(token, (identity, exp))
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        jwt = self._jwt
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        # PyJWT has checked that exp is an integer and not past
        return identity_from_claims(claims), float(claims["exp"])


_claims_decoder = msgspec.json.Decoder(dict)


class InsecureDevAuthenticator:
    """Development only: the token text is the user id, or a JWT's unverified claims."""

    name = "insecure-dev"

    def identify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("a token is required: in --insecure-dev mode the token is the user id")
        if token.count(".") == 2:  # looks like a JWT: take sub and rooms without checking
            payload = token.split(".")[1]
            try:
                claims = _claims_decoder.decode(base64.urlsafe_b64decode(payload + "=" * 4))
            except (ValueError, msgspec.DecodeError):
                raise AuthError("token looks like a JWT but its payload is not JSON") from None
            return identity_from_claims(claims)
        return Identity(_checked_user(token))


def load_public_key(path: str | Path) -> rsa.RSAPublicKey:
    """Read an RS256 verification key (PEM), refusing anything that is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read --jwt-public-key {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"{path} holds a private key; give the server only the public key "
            "(openssl rsa -in private.pem -pubout -out public.pem)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError(f"{path} is not an RSA public key; RS256 needs one")
    if key.key_size < MIN_RSA_BITS:
        raise KeyFileError(f"{path}: the RSA key has {key.key_size} bits; use {MIN_RSA_BITS}+")
    return key


def check_secret(secret: str) -> None:
    """Refuse an HS256 secret short enough to brute-force from one captured token."""
    size = len(secret.encode())
    if size < MIN_HS256_SECRET:
        raise KeyFileError(
            f"the JWT secret has {size} bytes; HS256 needs at least {MIN_HS256_SECRET} "
            "(RFC 7518 3.2); make one with: openssl rand -hex 32"
        )


def check_identity_settings(
    insecure_dev: bool, jwt_secret: str | None, jwt_public_key: str | None
) -> None:
    """Exactly one way to check identities, with a usable key; else KeyFileError (one line)."""
    if insecure_dev and (jwt_secret or jwt_public_key):
        raise KeyFileError(
            "pass either --insecure-dev or a JWT key (--jwt-secret or --jwt-public-key), not both"
        )
    if jwt_secret and jwt_public_key:
        raise KeyFileError("pass either --jwt-secret (HS256) or --jwt-public-key (RS256), not both")
    if jwt_public_key:
        load_public_key(jwt_public_key)
    elif jwt_secret:
        check_secret(jwt_secret)
    elif not insecure_dev:
        raise KeyFileError(
            "no way to check identities: pass --jwt-secret SECRET (or set RTBENCH_JWT_SECRET) "
            "for HS256 tokens, --jwt-public-key FILE for RS256, or --insecure-dev to accept "
            "unsigned user ids on your own machine"
        )


def make_authenticator(
    insecure_dev: bool, jwt_secret: str | None, jwt_public_key: str | None = None
) -> Authenticator:
    """Choose the authenticator; the caller has already refused none or several."""
    if insecure_dev:
        log.warning(
            "rtbench: --insecure-dev: accepting UNSIGNED identities; anyone can be anyone. "
            "Never expose this server beyond your machine."
        )
        return InsecureDevAuthenticator()
    if jwt_public_key:
        return JwtAuthenticator(load_public_key(jwt_public_key), "RS256")
    if jwt_secret:
        check_secret(jwt_secret)
        return JwtAuthenticator(jwt_secret, "HS256")
    raise ValueError("no authenticator configured")
