"""``rtbench token``: mint a signed token for the reference server, for tests and demos.

Production tokens come from your own login service; this prints one that
``rtbench serve --jwt-secret`` (HS256) or ``--jwt-public-key`` (RS256, signed here
with the matching private key) accepts, so a person can try the server, a load
run or a monitor against a server that verifies identities.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from rtbench.cli import UserError

_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(app: typer.Typer) -> None:
    app.command("token", help=HELP, short_help="Mint a signed token (JWT) for the server.")(token)


HELP = """Print a JWT that `rtbench serve` accepts: sub = --user, exp = now + --ttl, and the
room grants of --rooms (exact names or patterns such as 'team-*'; without --rooms the token
has no ceiling). HS256 with --secret (or RTBENCH_JWT_SECRET), or RS256 with --private-key.

  TOKEN=$(rtbench token --user alice --rooms lobby --rooms 'team-*' --ttl 1h)
  websocat "ws://127.0.0.1:8765/ws?token=$TOKEN"
"""


def parse_ttl(text: str) -> int:
    """'90', '90s', '15m', '1h', '7d' -> seconds (at least 1)."""
    match = _TTL.match(text)
    if not match or int(match.group(1)) < 1:
        raise UserError(f"--ttl {text!r}: expected a duration such as 90s, 15m, 1h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def token(
    user: Annotated[str, typer.Option("--user", "-u", help="User id (the token's sub).")],
    secret: Annotated[
        str | None,
        typer.Option(envvar="RTBENCH_JWT_SECRET", help="HS256 secret (>= 32 bytes)."),
    ] = None,
    private_key: Annotated[
        Path | None,
        typer.Option("--private-key", help="RSA private key (PEM) to sign RS256 with."),
    ] = None,
    rooms: Annotated[
        list[str] | None,
        typer.Option("--rooms", "-r", help="A room grant (name or pattern); repeatable."),
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 90s, 15m, 1h, 7d.")] = "1h",
) -> None:
    import time

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from reference_server.auth import (
        MAX_GRANTS,
        MAX_ROOM_ID,
        USER_ID,
        KeyFileError,
        check_secret,
    )

    if not USER_ID.match(user):
        raise UserError(f"--user {user!r}: use 1-64 characters of A-Z a-z 0-9 _ . @ -")
    grants = list(rooms or [])
    if len(grants) > MAX_GRANTS or any(not 1 <= len(r) <= MAX_ROOM_ID for r in grants):
        raise UserError(f"--rooms: at most {MAX_GRANTS} names of 1-{MAX_ROOM_ID} characters")
    claims: dict[str, object] = {"sub": user, "exp": int(time.time()) + parse_ttl(ttl)}
    if grants:
        claims["rooms"] = grants
    if private_key is not None and secret:
        raise UserError("pass either --secret (HS256) or --private-key (RS256), not both")
    if private_key is not None:
        try:
            key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
        except OSError as exc:
            raise UserError(f"cannot read {private_key}: {exc.strerror or exc}") from None
        except (ValueError, TypeError):
            raise UserError(f"{private_key} is not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise UserError(f"{private_key} is not an RSA private key; RS256 needs one")
        typer.echo(jwt.encode(claims, key, algorithm="RS256"))
        return
    if not secret:
        raise UserError(
            "no signing key: pass --secret SECRET (or set RTBENCH_JWT_SECRET) for HS256, "
            "or --private-key FILE for RS256"
        )
    try:
        check_secret(secret)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    typer.echo(jwt.encode(claims, secret, algorithm="HS256"))
