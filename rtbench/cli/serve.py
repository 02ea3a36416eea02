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
            help="sqlite:///PATH (relative), sqlite:////PATH (absolute), postgresql://... "
            "or memory (default sqlite:///rtbench-server.db).",
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
    jwt_public_key: Annotated[
        str | None,
        typer.Option(
            envvar="RTBENCH_JWT_PUBLIC_KEY", help="Verify RS256 JWTs with this public key (PEM)."
        ),
    ] = None,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            envvar="RTBENCH_METRICS_TOKEN", help="/metrics then needs Authorization: Bearer TOKEN."
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="Browser origin allowed to connect (e.g. https://chat.example.com); repeatable. "
            "Default: any."
        ),
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(help="WebSocket library: picows or websockets (default picows)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes on one port (SO_REUSEPORT); >1 needs --broker."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            help="redis://HOST:PORT/DB: fan-out and presence across workers and machines "
            "(needs --store postgresql://...). docs/SCALING.md."
        ),
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
    cfg = override(cfg, "cluster", workers=workers, broker=broker)
    cfg = override(
        cfg,
        "security",
        jwt_public_key=jwt_public_key,
        metrics_token=metrics_token,
        allowed_origins=allow_origin or None,
    )
    dev = insecure_dev or cfg.insecure_dev
    secret = jwt_secret or cfg.jwt_secret
    from reference_server.auth import KeyFileError, check_identity_settings

    try:  # exactly one way to check identities, with a key that works (docs/SECURITY.md)
        check_identity_settings(dev, secret, cfg.security.jwt_public_key)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    import msgspec

    cfg = msgspec.structs.replace(cfg, insecure_dev=dev, jwt_secret=secret)
    from reference_server.workers import SupervisorError, cluster_problem, supervise

    problem = cluster_problem(cfg)
    if problem is not None:
        raise UserError(problem)
    try:
        make_store(cfg.store.url)  # validate the URL before anything starts
        if cfg.cluster.workers > 1:
            raise typer.Exit(supervise(cfg))
        run(cfg)
    except (StoreError, StartupError, SupervisorError) as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        raise typer.Exit(130) from None
