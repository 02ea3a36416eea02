"""``rtbench serve``: run the reference realtime server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rtbench.cli import UserError


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP, short_help="Run the reference realtime server.")(serve)


HELP = """Run the reference realtime server (rooms, DMs, history, receipts, typing, presence,
events, resume) on uvloop. One line on stderr gives its address; SIGINT/SIGTERM drain it
(in-flight sends are stored and acked, every client gets close 1012). See docs/SERVER.md."""


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port; 0 picks a free one (default 8765).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///PATH (relative), sqlite:////PATH (absolute) or memory "
            "(default sqlite:///rtbench-server.db).",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with limits and timings (docs/SERVER.md).")
    ] = None,
    insecure_dev: Annotated[
        bool,
        typer.Option(
            "--insecure-dev", help="Accept unsigned identities: the token is the user id."
        ),
    ] = False,
    jwt_secret: Annotated[
        str | None,
        typer.Option(envvar="RTBENCH_JWT_SECRET", help="Verify HS256 JWTs with this secret."),
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(help="WebSocket library: picows or websockets (default picows)."),
    ] = None,
) -> None:
    from reference_server.config import ConfigError, load_config, override
    from reference_server.server import StartupError, run
    from reference_server.store import StoreError, make_store

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if transport is not None and transport not in ("picows", "websockets"):
        raise UserError(f"--transport must be picows or websockets, not {transport!r}")
    cfg = override(cfg, "listen", host=host, port=port, transport=transport)
    cfg = override(cfg, "store", url=store)
    dev = insecure_dev or cfg.insecure_dev
    secret = jwt_secret or cfg.jwt_secret
    if dev and secret:
        raise UserError("pass either --insecure-dev or --jwt-secret, not both")
    if not dev and not secret:
        raise UserError(
            "no way to check identities: pass --jwt-secret SECRET (or set RTBENCH_JWT_SECRET) "
            "for HS256 tokens, or --insecure-dev to accept unsigned user ids on your own machine"
        )
    import msgspec

    cfg = msgspec.structs.replace(cfg, insecure_dev=dev, jwt_secret=secret)
    try:
        make_store(cfg.store.url)  # validate the URL before anything starts
        run(cfg)
    except (StoreError, StartupError) as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        raise typer.Exit(130) from None
