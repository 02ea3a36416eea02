"""What a person sees of a fault run: one row per fault, after the verdicts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from rtbench.results import Results


def _ms(figures: dict[str, float] | None) -> str:
    if not figures:
        return "-"
    return f"{figures['p50']:,.0f} / {figures['p99']:,.0f} / {figures['max']:,.0f}"


def _storm(storm: dict[str, Any] | None) -> tuple[str, str]:
    """(accepted handshakes per s, peak / mean; seconds until 99 % were back and whole)."""
    if not storm:
        return "-", "-"
    rate = storm.get("handshakes_per_s")
    rates = f"{rate['peak']:,.0f} / {rate['mean']:,.0f}" if rate else "-"
    back = storm.get("resumed_99_s")
    return rates, "never" if back is None else f"{back:.2f} s"


def fault_row(entry: dict[str, Any]) -> list[str]:
    when = entry.get("started_s")
    lost = entry.get("connections_lost", 0)
    back = entry.get("recovered", 0)
    missing = entry.get("unrecovered", 0)
    flow = entry.get("flow_back_s")
    return [
        entry.get("spec", entry.get("kind", "")),
        "-" if when is None else f"{when:.2f} s",
        f"{lost:,} / {back:,}" + (f" ({missing:,} never)" if missing else ""),
        _ms(entry.get("reconnect_ms")),
        _ms(entry.get("recovery_ms")),
        _ms(entry.get("detect_ms")),
        *_storm(entry.get("storm")),
        "-" if flow is None else f"{flow:.1f} s",
        f"{entry.get('lost', 0):,}",
        entry.get("error", ""),
    ]


def fault_table(results: Results) -> Table:
    table = Table(title="faults")
    table.add_column("fault", no_wrap=True)
    for column in (
        "at",
        "conns lost / back",
        "reconnect ms p50/p99/max",
        "recovery ms p50/p99/max",
        "detect ms p50/p99/max",
        "handshakes/s peak / mean",
        "99 % back",
        "flow back",
        "msgs lost",
        "note",
    ):
        table.add_column(column)
    for entry in results.run.faults:
        table.add_row(*fault_row(entry))
    return table


def print_faults(console: Console, results: Results) -> None:
    console.print(fault_table(results))
    t = results.totals
    console.print(
        f"reconnects {t.reconnects:,}, sends written again {t.resent:,}; messages lost "
        f"{t.lost:,}; duplicated {t.duplicated_after_dedupe:,} after the clients' seq dedupe "
        f"({t.duplicated:,} sent twice by the server, {t.replay_duplicates:,} dropped by seq)",
        highlight=False,
    )
