"""What a person sees: the live progress panel while a run goes, then figures and verdicts.

Rich renders both; with no terminal (CI logs) the panel becomes one plain line every
few seconds, so a log still shows the run advancing.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from loadtest.run.failures import describe
from loadtest.run.outcome import Progress
from rtbench.results import Results
from rtbench.slo import Status

PLAIN_EVERY_S = 5.0


class ProgressView:
    """Call with each Progress; a context manager around the run."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.live: Live | None = None
        self.last_plain = 0.0

    def __enter__(self) -> ProgressView:
        if self.enabled and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            self.live.update(self.render(p))
            return
        now = time.monotonic()
        if now - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = now
            self.console.print(self.line(p), highlight=False)

    @staticmethod
    def line(p: Progress) -> str:
        p99 = f"{p.p99_ms:.2f} ms" if p.p99_ms is not None else "-"
        return (
            f"[{p.phase}] {p.elapsed_s:5.0f}/{p.total_s:.0f} s  conns {p.connections:,}/"
            f"{p.target_connections:,} (failed {p.failed:,})  sends/s {p.sends_per_s:,.0f}  "
            f"deliveries/s {p.deliveries_per_s:,.0f}  p99 {p99}  errors {p.errors:,}  "
            f"cpu {p.cpu_percent:.0f} %"
        )

    @staticmethod
    def render(p: Progress) -> Table:
        table = Table(title=f"rtbench run: {p.phase}", show_header=False, min_width=60)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("elapsed", f"{p.elapsed_s:.0f} s of ~{p.total_s:.0f} s")
        table.add_row(
            "connections", f"{p.connections:,} of {p.target_connections:,} (failed {p.failed:,})"
        )
        table.add_row("sends/s", f"{p.sends_per_s:,.0f}")
        table.add_row("deliveries/s", f"{p.deliveries_per_s:,.0f}")
        table.add_row(
            "delivery p99 (last 10 s)", f"{p.p99_ms:.2f} ms" if p.p99_ms is not None else "-"
        )
        table.add_row("errors", f"{p.errors:,}")
        table.add_row("generator CPU", f"{p.cpu_percent:.0f} % of a core")
        return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def figures_table(results: Results) -> Table:
    t = results.totals
    table = Table(title=f"{results.run.scenario} against {results.run.target}")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_row(
        "connections opened / failed", f"{t.connections_opened:,} / {t.connections_failed:,}"
    )
    table.add_row("ready / held at end", f"{t.connections_ready:,} / {t.connections_held:,}")
    if t.connections_answering is not None:
        table.add_row("answering the last heartbeat", f"{t.connections_answering:,}")
    if t.sent:
        table.add_row("sent / acked / rejected", f"{t.sent:,} / {t.acked:,} / {t.rejected:,}")
        table.add_row(
            "expected = delivered + lost",
            f"{t.expected_deliveries:,} = {t.delivered:,} + {t.lost:,}",
        )
        table.add_row("duplicated / out of order", f"{t.duplicated:,} / {t.out_of_order:,}")
    for name, summary in results.latency.items():
        if summary.count:
            table.add_row(
                f"{name} ms p50 / p99 / p99.9 / max",
                f"{_ms(summary.p50)} / {_ms(summary.p99)} / {_ms(summary.p999)} / "
                f"{_ms(summary.max)}",
            )
    g = results.generator
    table.add_row(
        "generator CPU mean / max (per process)",
        f"{g.cpu_percent_mean if g.cpu_percent_mean is not None else '-'} / "
        f"{g.cpu_percent_max if g.cpu_percent_max is not None else '-'} %",
    )
    table.add_row(
        "generator loop lag p99 / max", f"{_ms(g.loop_lag_ms_p99)} / {_ms(g.loop_lag_ms_max)} ms"
    )
    if "rss_per_connection_bytes" in results.server:
        table.add_row(
            "server RSS per connection", f"{results.server['rss_per_connection_bytes']:,.0f} B"
        )
    for cause, count in sorted(t.failures_by_cause.items(), key=lambda kv: -kv[1]):
        table.add_row(f"failed: {describe(cause)}", f"{count:,}")
    for code, count in sorted(t.closes_by_code.items(), key=lambda kv: -kv[1]):
        table.add_row(f"closed by server/peer with {code}", f"{count:,}")
    for code, count in sorted(t.errors_by_code.items(), key=lambda kv: -kv[1]):
        table.add_row(f"error frames: {code}", f"{count:,}")
    return table


_STYLE = {Status.PASS: "green", Status.FAIL: "red", Status.NOT_MEASURED: "dim"}


def verdict_table(results: Results) -> Table:
    table = Table(title="SLO verdicts")
    for column in ("target", "objective", "measured", "verdict", "detail"):
        table.add_column(column)
    for v in results.verdicts:
        digits = 0 if v.unit == "connections" else 2
        measured = "-" if v.measured is None else f"{v.measured:,.{digits}f} {v.unit}".strip()
        status = v.status.value.replace("_", " ")
        if not v.trusted:
            status += " (untrusted)"
        style = _STYLE[v.status] if v.trusted else "yellow"
        table.add_row(v.target.value, v.objective, measured, f"[{style}]{status}[/]", v.detail)
    return table


def print_summary(console: Console, results: Results, verdicts_first: bool = False) -> None:
    """The figures and the verdicts (``rtbench check`` leads with its four verdicts)."""
    tables = [figures_table(results), verdict_table(results)]
    for table in reversed(tables) if verdicts_first else tables:
        console.print(table)
    for note in results.generator.notes:
        console.print(f"[yellow]generator:[/] {note}")
