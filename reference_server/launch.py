"""``rtbench serve`` and ``python -m reference_server``: flags in, a running server out.

Why this is not a typer command like the rest of ``rtbench``: a restarted server is
down until it listens, and every millisecond of its start is in the recovery figure of
every client (docs/RECOVERY.md). typer 0.29 brings pydantic with it: importing the
typer CLI cost ~115 ms of the server's ~270 ms from spawn to answering HTTP
(``python -m benchmarks.server_start``; reports/recovery.md has the figures). So the
server's flags are parsed here by ``argparse``, and the console script
(``rtbench.entry``) hands ``rtbench serve ...`` to ``main`` before typer is imported.
``rtbench serve --help`` prints this parser's help; the typer app only lists the
command and forwards to ``main`` when it is called in-process.

Errors a person can fix (a bad flag, an unreadable config, a wrong store URL) end with
one line on stderr and exit code 2, like every other rtbench command.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from rtbench.exitcodes import ExitCode

PROG = "rtbench serve"
SUMMARY = "Run the reference realtime server."
DESCRIPTION = """Run the reference realtime server (rooms, DMs, history, receipts, typing, presence,
events, resume) on uvloop. One line on stderr gives its address; SIGINT/SIGTERM drain it
(in-flight sends are stored and acked, every client gets close 1012). See docs/SERVER.md."""


class UsageError(Exception):
    """A flag or file the user can fix: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with rtbench's one-line errors instead of usage + message + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class _Formatter(argparse.HelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)


def _rate(text: str) -> float:
    """An argparse type: a rate per second, 0 or more (0.5: one every 2 s)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a rate of 0 or more")
    return value


def _whole(low: int, high: int | None, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high] (no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            span = f"is not in {low}..{high}" if high is not None else f"is below {low}"
            raise argparse.ArgumentTypeError(f"{value} {span}")
        return value

    return parse


SECRET_FLAGS = (
    ("--jwt-secret", "SECRET", "RTBENCH_JWT_SECRET", "Verify HS256 JWTs with this secret"),
    (
        "--jwt-public-key",
        "FILE",
        "RTBENCH_JWT_PUBLIC_KEY",
        "Verify RS256 JWTs with this public key (PEM)",
    ),
    (
        "--metrics-token",
        "TOKEN",
        "RTBENCH_METRICS_TOKEN",
        "/metrics then needs Authorization: Bearer TOKEN",
    ),
    (
        "--admin-token",
        "TOKEN",
        "RTBENCH_ADMIN_TOKEN",
        "Turn on /admin/drain (clients asked to reconnect in batches), behind "
        "Authorization: Bearer TOKEN; --insecure-dev turns it on without one",
    ),
)
"""Flags that also come from the environment, so secrets need not be on a command line."""


def parser() -> argparse.ArgumentParser:
    """The flags of ``rtbench serve`` (environment variables fill the secret ones)."""
    p = _Parser(prog=PROG, description=DESCRIPTION, formatter_class=_Formatter, add_help=False)
    p.add_argument("-h", "--help", action="help", help="Show this message and exit.")
    p.add_argument("--host", metavar="HOST", help="Address to listen on (default 127.0.0.1).")
    p.add_argument(
        "--port",
        type=_whole(0, 65535, "a port number"),
        metavar="PORT",
        help="Port; 0 picks a free one (default 8765).",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="sqlite:///PATH (relative), sqlite:////PATH (absolute), postgresql://... "
        "or memory (default sqlite:///rtbench-server.db).",
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML file with limits and timings (docs/SERVER.md)."
    )
    p.add_argument(
        "--insecure-dev",
        action="store_true",
        help="Accept unsigned identities: the token is the user id.",
    )
    for flag, metavar, variable, text in SECRET_FLAGS:  # a flag, or its environment variable
        p.add_argument(
            flag,
            default=os.environ.get(variable),
            metavar=metavar,
            help=f"{text} (env {variable}).",
        )
    p.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="Browser origin allowed to connect (e.g. https://chat.example.com); "
        "repeatable. Default: any.",
    )
    p.add_argument(
        "--admit-rate",
        type=_rate,
        metavar="N",
        help="Accept at most N upgrades a second (a token bucket); past it HTTP 503 with "
        "Retry-After, which clients retry with backoff. 0: no limit (default).",
    )
    p.add_argument(
        "--admit-burst",
        type=_whole(0, None, "a whole number"),
        metavar="M",
        help="... and at most M at once (default: N, one second's worth).",
    )
    p.add_argument(
        "--transport",
        metavar="NAME",
        help="WebSocket library: picows or websockets (default picows).",
    )
    p.add_argument(
        "--workers",
        type=_whole(1, None, "a whole number"),
        metavar="N",
        help="Worker processes on one port (SO_REUSEPORT); >1 needs --broker.",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="redis://HOST:PORT/DB: fan-out and presence across workers and machines "
        "(needs --store postgresql://...). docs/SCALING.md.",
    )
    return p


def serve(args: argparse.Namespace) -> int:
    """Build the config from the file and the flags, check it, run until drained."""
    import msgspec

    from reference_server.auth import KeyFileError, check_identity_settings
    from reference_server.config import ConfigError, load_config, override
    from reference_server.server import StartupError, run
    from reference_server.store import StoreError, make_store

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.transport is not None and args.transport not in ("picows", "websockets"):
        raise UsageError(f"--transport must be picows or websockets, not {args.transport!r}")
    cfg = override(cfg, "listen", host=args.host, port=args.port, transport=args.transport)
    cfg = override(cfg, "store", url=args.store)
    cfg = override(cfg, "limits", admit_rate=args.admit_rate, admit_burst=args.admit_burst)
    cfg = override(cfg, "cluster", workers=args.workers, broker=args.broker)
    cfg = override(
        cfg,
        "security",
        jwt_public_key=args.jwt_public_key,
        metrics_token=args.metrics_token,
        admin_token=args.admin_token,
        allowed_origins=args.allow_origin or None,
    )
    dev = args.insecure_dev or cfg.insecure_dev
    secret = args.jwt_secret or cfg.jwt_secret
    try:  # exactly one way to check identities, with a key that works (docs/SECURITY.md)
        check_identity_settings(dev, secret, cfg.security.jwt_public_key)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    cfg = msgspec.structs.replace(cfg, insecure_dev=dev, jwt_secret=secret)
    if cfg.cluster.workers > 1 or cfg.cluster.broker:  # the supervisor's module: ~8 ms
        from reference_server.workers import cluster_problem

        problem = cluster_problem(cfg)
        if problem is not None:
            raise UsageError(problem)
    try:
        make_store(cfg.store.url)  # validate the URL before anything starts
        if cfg.cluster.workers > 1:
            from reference_server.workers import SupervisorError, supervise

            try:
                return supervise(cfg)
            except SupervisorError as exc:
                raise UsageError(str(exc)) from None
        run(cfg)
    except (StoreError, StartupError) as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        return 130
    return 0


def leave(code: int) -> NoReturn:
    """End the server process now that it has drained: no interpreter teardown.

    By the time ``run`` returns, every client has had its 1012, the store has committed
    and closed, and the log is written; what CPython's finalization would still do
    (tearing down every module, a last garbage collection over everything the
    connections left) only keeps the port closed for longer during a restart. Used by
    the process entry points (``rtbench serve``, ``python -m reference_server``), never
    by code that calls ``main`` in-process.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, serve, and turn every usage problem into one line and exit 2."""
    try:
        return serve(parser().parse_args(argv))
    except UsageError as exc:
        print(f"rtbench: {exc}", file=sys.stderr)
        return ExitCode.USAGE
