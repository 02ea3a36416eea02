"""``rtbench monitor``: the long-running health monitor (docs/MONITOR.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from rtbench.cli import UserError
from rtbench.exitcodes import ExitCode


def register(app: typer.Typer) -> None:
    app.command(
        "monitor",
        help=(
            "Probe realtime services around the clock: uptime from message-level probes kept "
            "on disk, the four targets on /healthz, Prometheus /metrics and a status page."
        ),
        no_args_is_help=True,
    )(monitor)


def monitor(
    target: list[str] = typer.Option(
        [],
        "--target",
        "-t",
        help="WebSocket URL to probe, or NAME=URL; repeat for several targets.",
    ),
    protocol: str = typer.Option(
        "reference",
        "--protocol",
        help="Adapter for --target: a built-in one (docs/ADAPTERS.md) or FILE.py[:Class].",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Monitor TOML file (targets and settings)."
    ),
    listen: str | None = typer.Option(
        None,
        "--listen",
        help="HOST:PORT of /healthz, /metrics and the status page (default 127.0.0.1:9464).",
    ),
    metrics_token: str | None = typer.Option(
        None,
        "--metrics-token",
        envvar="RTBENCH_METRICS_TOKEN",
        help="Require Authorization: Bearer TOKEN on the monitor's /metrics.",
    ),
    interval: str | None = typer.Option(
        None, "--interval", help="Time between probes, e.g. 5s or 500ms (default 5s)."
    ),
    timeout: str | None = typer.Option(
        None,
        "--timeout",
        help="Probe timeout, at most the interval (default: the interval, at most 10s).",
    ),
    db: Path | None = typer.Option(
        None, "--db", help="SQLite file of the probe history (default rtbench-monitor.db)."
    ),
    slo: Path | None = typer.Option(None, "--slo", help="SLO file (default targets otherwise)."),
    failures_to_open: int | None = typer.Option(
        None,
        "--failures-to-open",
        help="Consecutive failed intervals that open an incident (default 2).",
    ),
    health_window: str | None = typer.Option(
        None, "--health-window", help="Window of the latency and recovery verdicts (default 1h)."
    ),
    ingest: list[Path] = typer.Option(
        [],
        "--ingest",
        help="Store an `rtbench run` results.json as connections evidence; repeatable. "
        "Without targets, ingest and exit.",
    ),
    ingest_as: str | None = typer.Option(
        None, "--ingest-as", help="Target name for --ingest (default: matched by host:port)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every held-connection try."),
) -> None:
    """Run the monitor until SIGINT/SIGTERM."""
    import asyncio
    import logging
    import signal
    import sys

    import msgspec

    from monitor.config import (
        ConfigError,
        MonitorConfig,
        load_config_file,
        parse_target_arg,
        settle,
    )
    from monitor.ingest import IngestError
    from monitor.ingest import ingest as ingest_file
    from monitor.service import Monitor
    from monitor.store import ProbeStore, StoreError

    try:
        base = load_config_file(config) if config else MonitorConfig()
        overrides = {
            "target": [*base.target, *(parse_target_arg(t, protocol) for t in target)],
            "listen": listen,
            "metrics_token": metrics_token,
            "interval": interval,
            "timeout": timeout,
            "db": str(db) if db else None,
            "slo": str(slo) if slo else None,
            "failures_to_open": failures_to_open,
            "health_window": health_window,
        }
        merged = msgspec.structs.replace(
            base, **{k: v for k, v in overrides.items() if v is not None}
        )
        if failures_to_open is not None and failures_to_open < 1:
            raise ConfigError("--failures-to-open must be at least 1")
        if ingest:
            store = ProbeStore(merged.db)
            try:
                for path in ingest:
                    run, new = ingest_file(store, path, merged.target, ingest_as)
                    held = "held through the check" if run.scenario == "check" else "peak"
                    recovered = f", {run.recoveries:,} recoveries" if run.recoveries else ""
                    typer.echo(
                        f"{'ingested' if new else 'already ingested'} run {run.run_id} "
                        f"({run.scenario}) for target {run.target}: {held} "
                        f"{run.peak_connections:,} of {run.attempted:,} connections{recovered}"
                    )
            finally:
                store.close()
            if not merged.target:
                return
        settings = settle(merged)
        service = Monitor(settings)
    except (ConfigError, IngestError, StoreError) as exc:
        raise UserError(str(exc)) from None

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            host, port = await service.start()
        except OSError as exc:
            await service.stop()
            raise UserError(
                f"cannot listen on {settings.listen_host}:{settings.listen_port}: "
                f"{exc.strerror or exc}"
            ) from None
        except StoreError as exc:
            await service.stop()
            raise UserError(str(exc)) from None
        shown = f"[{host}]" if ":" in host else host
        typer.echo(
            f"rtbench monitor: {len(settings.targets)} target(s) every {settings.interval:g}s; "
            f"http://{shown}:{port}/ (status), /healthz, /metrics; history in {settings.db}",
            err=True,
        )
        try:
            await service.run_until(stop)
        finally:
            await service.stop()
        typer.echo("rtbench monitor: stopped", err=True)

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            asyncio.run(main())
        else:
            uvloop.run(main())
    except KeyboardInterrupt:  # pragma: no cover - a signal before the handler was set
        raise typer.Exit(ExitCode.OK) from None
