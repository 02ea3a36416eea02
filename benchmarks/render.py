"""The suite's Markdown summary and SVG charts, rendered from a run folder's JSON files.

``summary.md`` (and, with ``rtbench bench --publish``, ``reports/BENCHMARKS.md``) is
made only from what the benchmarks wrote, so it can be re-rendered from any finished
run. A published file keeps its hand-written analysis: everything from the line
``<!-- analysis -->`` on is carried over from the previous version.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.whose import bucket_keys
from rtbench.histogram import LatencyHistogram
from rtbench.report.svg import (
    PALETTE,
    LinearScale,
    LogScale,
    PercentileScale,
    Point,
    Rule,
    Series,
    auto_scale,
    line_chart,
    percentile_position,
)

ANALYSIS_MARKER = "<!-- analysis -->"
SERVERS = {"reference": "reference server", "node": "Node ws"}

# The report's chart CSS, inlined so a committed .svg renders the same on its own.
_SVG_STYLE = (
    "<style>svg.chart{font-family:system-ui,sans-serif;font-size:11px;background:#fff}"
    ".plot{fill:#fff;stroke:#ccc}.grid{stroke:#e6e6e6;stroke-width:1}"
    ".tick,.legend{fill:#555}.axis-label{fill:#222;font-size:12px}"
    "path.series{fill:none;stroke-width:1.8;stroke-linejoin:round}"
    ".rule line{stroke-width:1.5;stroke-dasharray:6 3}"
    ".rule text{font-size:11px;font-weight:600;stroke:#fff;stroke-width:3px;paint-order:stroke}"
    "</style>"
)


def standalone_svg(svg: str) -> str:
    """An inline chart as a file of its own: XML declaration and its CSS inside."""
    head, _, rest = svg.partition(">")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{head}>{_SVG_STYLE}{rest}\n'


# -- formatting ---------------------------------------------------------------------------------


def num(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def kb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f} KB"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not decided"}[met]


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# -- charts -------------------------------------------------------------------------------------


def latency_load_chart(outcome: dict[str, Any]) -> str | None:
    series: list[Series] = []
    for i, (kind, label) in enumerate(SERVERS.items()):
        curve = outcome["summary"].get(kind, {}).get("curve", [])
        for which, dashed in (("p99_ms", False), ("p50_ms", True)):
            points: list[Point] = [
                (c["msgs_per_s"], c[which]) for c in curve if c["msgs_per_s"] is not None
            ]
            if points:
                name = f"{label} {which[:3]}"
                tips = [f"{name}: {y:.1f} ms at {x:,.0f} msgs/s" for x, y in points if y]
                if len(tips) == len(points):
                    series.append(Series(name, points, PALETTE[i], dashed, tips))
                else:
                    series.append(Series(name, points, PALETTE[i], dashed))
    if not series:
        return None
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y] + [100.0]
    return line_chart(
        title="Delivery latency vs load (chat, rooms of 10)",
        series=series,
        x_scale=LinearScale(0.0, max(xs)),
        y_scale=LogScale(min(ys), max(ys)),
        x_label="messages sent per second (each delivered to 9 others)",
        y_label="delivery latency (ms, log scale)",
        rules=[Rule(100.0, "p99 limit 100 ms")],
    )


def _curve(hdr: str) -> list[Point]:
    histogram = LatencyHistogram.decode(hdr)
    if histogram.count == 0:
        return []
    limit = math.log10(histogram.count) if histogram.count > 1 else 1.0
    points: list[Point] = []
    for percentile, value in histogram.percentile_curve():
        position = min(percentile_position(percentile), limit)
        if points and position <= points[-1][0] and percentile < 100:
            continue
        points.append((position, value))
    return points


def fanout_chart(outcome: dict[str, Any], room: int) -> str | None:
    """HDR percentile curves of delivery latency, the median run of each server."""
    series: list[Series] = []
    for i, (kind, label) in enumerate(SERVERS.items()):
        runs = [r for r in outcome["runs"] if r["server"] == kind and r["room"] == room]
        runs = [r for r in runs if r.get("hdr") and r.get("per_cpu_s") is not None]
        if not runs:
            continue
        runs.sort(key=lambda r: r["per_cpu_s"])
        points = _curve(runs[len(runs) // 2]["hdr"])
        if points:
            series.append(Series(f"{label}", points, PALETTE[i]))
    if not series:
        return None
    ys = [y for s in series for _, y in s.points if y is not None] + [100.0]
    return line_chart(
        title=f"Fan-out delivery latency by percentile, room of {room:,}",
        series=series,
        x_scale=PercentileScale(0.0, max(x for s in series for x, _ in s.points)),
        y_scale=auto_scale(ys, log_span=50.0),
        x_label="percentile",
        y_label="delivery latency (ms)",
        rules=[Rule(100.0, "100 ms"), Rule(percentile_position(99.0), "p99", "x")],
    )


def write_charts(outcomes: dict[str, dict[str, Any]], folder: Path) -> dict[str, str]:
    """Render the charts the outcomes allow into ``folder``; returns {key: file name}."""
    made: dict[str, str] = {}
    wanted: list[tuple[str, str | None]] = []
    if outcomes.get("latency_load", {}).get("status") == "ok":
        wanted.append(("latency_load", latency_load_chart(outcomes["latency_load"])))
    if outcomes.get("fanout", {}).get("status") == "ok":
        for room in (100, 1000):
            wanted.append((f"fanout_{room}", fanout_chart(outcomes["fanout"], room)))
    folder.mkdir(parents=True, exist_ok=True)
    for key, svg in wanted:
        if svg is None:
            continue
        name = f"bench-{key.replace('_', '-')}.svg"
        (folder / name).write_text(standalone_svg(svg))
        made[key] = name
    return made


# -- sections -----------------------------------------------------------------------------------


def _took(index: dict[str, Any]) -> str:
    """How long the run's first pass took, in words ("71 minutes"; "" when unknown)."""
    try:
        start = dt.datetime.fromisoformat(index["started_at"])
        end = dt.datetime.fromisoformat(index["ended_at"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f"{round((end - start).total_seconds() / 60)} minutes"


def _header(index: dict[str, Any], title: str) -> list[str]:
    env = index.get("environment", {})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    mode = (
        "quick (smoke-check sizes, 1 run: not for publishing)"
        if index.get("quick")
        else (f"full, medians of {index.get('runs')} runs")
    )
    before = index.get("load_average_before", ["?"])[0]
    after = index.get("load_average_after", ["?"])[0]
    return [
        f"# {title}",
        "",
        f"- Run: {index.get('started_at')} to {index.get('ended_at')} UTC; {mode}; "
        f"commit {env.get('git_commit') or '?'}.",
        f"- Machine: {env.get('cpu')}, {env.get('cores')} cores, {env.get('memory_gib')} GiB; "
        f"{env.get('platform')}.",
        f"- Software: Python {env.get('python')}; {packages}; Node {env.get('node', '-')}, "
        f"ws {env.get('ws', '-')}.",
        f"- Cores: {env.get('pinning')}. Loopback only; 100-byte messages.",
        f"- Load average (1 min) before / after the suite: {before} / {after}. Other work on "
        "this machine during a run makes figures noisier; each benchmark's own is in its JSON.",
        *(
            f"- Re-run into this run's folder: {', '.join(r['benchmarks'])} "
            f"({r['started_at']} to {r['ended_at']} UTC; load average "
            f"{r['load_average_before'][0]} / {r['load_average_after'][0]})."
            for r in index.get("reruns", [])
        ),
        "- Reproduce: `rtbench bench` (the whole suite"
        + (f": this run took {took}" if (took := _took(index)) else "")
        + ", under the machine lock /tmp/rtbench-bench.lock); one part: "
        "`rtbench bench --only NAME`; a smoke check: `rtbench bench --quick`.",
        "",
    ]


def _goals(outcomes: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for name, outcome in outcomes.items():
        for goal in outcome.get("goals", []):
            rows.append(
                [name, goal["goal"], verdict(goal["met"]), goal["measured"], goal["limit"] or ""]
            )
    if not rows:
        return []
    return ["## Goals", "", *table(["benchmark", "goal", "verdict", "measured", "note"], rows)]


def _capacity(outcome: dict[str, Any]) -> list[str]:
    s = outcome["summary"]
    rows = [
        [
            SERVERS[kind],
            f"{num(s[kind]['held'])} of {num(s[kind]['aimed'])}",
            kb(s[kind]["rss_per_conn"]),
            num(s[kind]["idle_cpu_percent"], 1, " %"),
        ]
        for kind in SERVERS
        if kind in s
    ]
    return [
        *table(
            [
                "server",
                "idle connections held",
                "server RSS per connection",
                "server CPU while holding",
            ],
            rows,
        ),
        f"Reference server RSS per connection vs Node ws: {times(s.get('rss_ratio_vs_node'))}. "
        "RSS per connection = (peak server RSS while every connection is held - RSS before) "
        "/ connections held; held = answered the final heartbeat round trip.",
        "",
    ]


def _fanout(outcome: dict[str, Any], charts: dict[str, str], chart_dir: str) -> list[str]:
    lines: list[str] = []
    for key, s in outcome["summary"].items():
        if not key.startswith("room_"):
            continue
        room = int(key.removeprefix("room_"))
        lines.append(
            f"Room of {room:,}: offered {num(s['offered_deliveries_per_s'])} deliveries/s "
            f"(one publisher per room, Poisson). Ratio per server CPU-second, reference / Node: "
            f"**{times(s['ratio_per_cpu_s'])}**."
        )
        lines.append("")
        rows = [
            [
                SERVERS[kind],
                num(s[kind]["deliveries_per_s"]),
                num(s[kind]["server_cpu_percent"], 0, " %"),
                num(s[kind]["per_cpu_s"]),
                num(s[kind]["p50_ms"], 2),
                num(s[kind]["p99_ms"], 2),
                f"{s[kind]['lost']}",
            ]
            for kind in SERVERS
        ]
        lines += table(
            ["server", "deliveries/s", "server CPU", "deliveries per server CPU-s",
             "p50 ms", "p99 ms", "lost"],
            rows,
        )  # fmt: skip
        chart = charts.get(f"fanout_{room}")
        if chart:
            lines += [f"![fan-out latency, room of {room}]({chart_dir}{chart})", ""]
    return lines


def _sweep_cells(c: dict[str, Any]) -> list[str]:
    """A chat sweep step's figures, as latency_load's and chat_10k's tables show them."""
    return [
        num(c["msgs_per_s"]),
        num(c["p50_ms"], 2),
        num(c["p99_ms"], 2),
        num(c.get("ack_p99_ms"), 2),
        num(c.get("bound_p99_ms"), 2),
        num(c.get("server_cpu_percent"), 0, " %"),
    ]


def _bucket(floor: float | None, upper: float | None) -> str:
    """A p99 known only as the histogram bucket holding it: "over X, at most Y"."""
    if upper is None:
        return "-"
    return f"{floor or 0:g}-{upper:g}"


STAGES_NOTE = (
    "The server's own column is the bucket holding its ack time's p99, then that of each "
    "stage the ack is spent in (docs/SERVER.md, metrics): wait, for the store's committer "
    "(per message); commit, the group commit (per batch); loop, from the commit's end to "
    "the event loop running its callback (per batch). Each is its own p99: they do not add "
    "up to the ack's. Over several runs the column spans them: the lowest floor to the "
    "highest upper edge."
)


def _own(c: dict[str, Any]) -> str:
    """The server's own ack p99 bucket, then its stages' (``benchmarks.whose.OWN_KEYS``):
    waiting for the committer, the commit, and waiting for the loop after it."""

    def bucket(name: str) -> str:
        floor_key, p99_key = bucket_keys(name)
        return _bucket(c.get(floor_key), c.get(p99_key))

    ack = bucket("ack")
    stages = [
        f"{label} {bucket(name)}"
        for name, label in (("wait", "wait"), ("commit", "commit"), ("callback", "loop"))
        if c.get(bucket_keys(name)[1]) is not None
    ]
    return ack + (f" ({', '.join(stages)})" if stages and ack != "-" else "")


def between_text(low: float, high: float | None) -> str:
    """A crossing as ``latency_load.crossing_between`` knows it (low, high or None), in
    words."""
    if high is None:
        return f"above {low:,.0f} msgs/s" if low else "unknown (no step under the limit)"
    if high == low:
        return f"{low:,.0f} msgs/s"
    return f"{low:,.0f}-{high:,.0f} msgs/s"


def _processes(n: int | None) -> str:
    """How many generator processes, as a sentence says it."""
    return "one process" if n == 1 else f"{n if n is not None else '?'} processes"


def _latency_load(outcome: dict[str, Any], charts: dict[str, str], chart_dir: str) -> list[str]:
    s = outcome["summary"]
    procs = s.get("generator_procs")
    lines = [
        f"{s.get('users', '?')} users in rooms of {s.get('room_size', '?')}, open-loop sends; "
        "each step one run at a higher rate"
        + (f"; the generator in {_processes(procs)} on its one core" if procs else "")
        + ". A step over 100 ms is the server's crossing when the server's own ack time at "
        "p99 was over 100 ms (the reference server's `rtbench_server_ack_seconds` on its "
        "/metrics, read around each step: the bucket holding its p99). It is the generator's "
        "when that time plus the server's worst event-loop lag stayed under 100 ms or, where "
        "the server's own figure cannot tell (Node ws has none), when the generator's own "
        "delay bound could explain the step or a truth probe beside the load (one light "
        "client timing its own message every 20 ms, `benchmarks.truth_chat`) saw delivery "
        "p99 under 100 ms. The goal compares each server's median crossing over its sweeps. "
        "A sweep the generator ended, or whose every step stayed under, tells only that its "
        "crossing lies above its highest step under the limit, so the median is known as a "
        "range; the goal is decided when the two servers' ranges do not overlap.",
        "",
    ]
    rows = []
    for kind, label in SERVERS.items():
        k = s.get(kind, {})
        crossed = k.get("crossing_between")
        bound = k.get("generator_bound_msgs_per_s")
        rows.append(
            [
                label,
                between_text(*crossed) if crossed else "-",
                num(k.get("highest_under_limit_msgs_per_s"), 0, " msgs/s"),
                num(bound, 0, " msgs/s") if bound else "-",
                "; ".join(k.get("stopped", [])),
            ]
        )
    lines += table(
        ["server", "p99 crosses 100 ms at (median of the sweeps)", "highest step under",
         "generator bounds it from", "sweep ended"],
        rows,
    )  # fmt: skip
    steps = []
    for kind, label in SERVERS.items():
        for c in s.get(kind, {}).get("curve", []):
            if c["msgs_per_s"] is None:  # no sweep reached this step
                continue
            steps.append(
                [
                    label,
                    *_sweep_cells(c),
                    num(c.get("truth_p99_ms"), 2),
                    _own(c),
                    f"{c.get('generator_saturated', 0)} / {c.get('generator_bound', 0)}",
                ]
            )
    lines += table(
        ["server", "msgs/s", "p50 ms", "p99 ms", "ack p99 ms", "generator bound p99 ms",
         "server CPU", "truth probe p99 ms", "server's own ack p99 ms (its bucket; its stages')",
         "runs: generator saturated / bounds it"],
        steps,
    )  # fmt: skip
    lines += [STAGES_NOTE, ""]
    if charts.get("latency_load"):
        lines += [f"![latency vs load]({chart_dir}{charts['latency_load']})", ""]
    profile = s.get("reference", {}).get("profile")
    if profile:
        lines += profile_lines(profile, "the reference server at the sweep's top step")
    return lines


def profile_lines(profile: dict[str, Any], where: str) -> list[str]:
    """A ``benchmarks.profile`` summary: each part's share of the samples, top functions."""
    if "error" in profile:
        return [f"Profile of {where}: not recorded ({profile['error']}).", ""]
    head = (
        f"Profile of {where} (py-spy, {profile.get('samples', 0):,} samples"
        + (
            f"; one more run at {profile['msgs_per_s']:,.0f} msgs/s, p99 "
            f"{num(profile.get('p99_ms'), 1)} ms"
            if profile.get("msgs_per_s") is not None
            else ""
        )
        + "; idle threads included, so a thread's shares are of its wall time; own: the "
        "innermost Python frame is in the part, cumulative: any frame is):"
    )
    parts = [
        [part, num(v["own_percent"], 1, " %"), num(v["cumulative_percent"], 1, " %")]
        for part, v in profile["parts"].items()
    ]
    top = [
        [f"`{o['function']}`", num(o["percent"], 1, " %"), f"`{c['function']}`",
         num(c["percent"], 1, " %")]
        for o, c in zip(profile["top_own"][:8], profile["top_cumulative"][:8], strict=False)
    ]  # fmt: skip
    threads = [
        f"- `{name}`: {t['percent']:.1f} % of the samples; of its own: "
        + ", ".join(f"{part} {share:.1f} %" for part, share in t["parts"].items())
        + "; top: "
        + ", ".join(f"`{f['function']}` {f['percent']:.1f} %" for f in t.get("top_own", []))
        for name, t in profile.get("threads", {}).items()
        if t["percent"] >= 1.0
    ]
    return [
        head,
        "",
        *threads,
        "",
        *table(["part", "own", "cumulative"], parts),
        *table(["top by own samples", "own", "top by cumulative samples", "cumulative"], top),
    ]


def _chat_10k(outcome: dict[str, Any]) -> list[str]:
    s = outcome["summary"]
    best = s.get("highest_rate_per_user")
    lines = [
        f"{s.get('users', 0):,} users in rooms of {s.get('room_size', '?')} against the "
        "reference server, open-loop sends, the generator in "
        f"{_processes(s.get('generator_procs'))} on its one core; the per-user rate steps "
        "up until a step misses (p99 over 10 ms, a loss, or a saturated generator). Whose "
        "a miss is follows latency_load's rule: the server's own ack time and worst "
        "event-loop lag first, then the generator's own delay bound, then the truth probe "
        "beside the load.",
        "",
        (
            f"Highest rate with p99 <= 10 ms in every run: **{best:g} msg/s per user "
            f"({num(s.get('highest_msgs_per_s'))} msgs/s)**."
            if best is not None
            else "No step kept p99 <= 10 ms in every run."
        )
        + " Sweep ended: "
        + "; ".join(s.get("stopped", []))
        + ".",
        "",
    ]
    rows = [
        [
            f"{c['rate_per_user']:g}",
            *_sweep_cells(c),
            num(c.get("truth_p99_ms"), 2),
            _own(c),
            f"{c['lost']}",
            f"{c['missed']} of {c['runs']}",
        ]
        for c in s.get("curve", [])
    ]
    lines += table(
        ["msg/s per user", "msgs/s", "p50 ms", "p99 ms", "ack p99 ms", "generator bound p99 ms",
         "server CPU", "truth probe p99 ms", "server's own ack p99 ms (its bucket; its stages')",
         "lost", "runs missed"],
        rows,
    )  # fmt: skip
    lines += [STAGES_NOTE, ""]
    if s.get("profile"):
        lines += profile_lines(s["profile"], "the reference server at the sweep's top step")
    return lines


def _micro(outcome: dict[str, Any]) -> list[str]:
    rows = []
    for name, s in outcome["summary"].items():
        if name.startswith("_"):
            continue
        extra = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in s.items()
            if k not in ("median_us", "mean_us", "ops_per_s", "rounds")
        )
        rows.append([f"`{name}`", num(s["median_us"], 2), num(s["ops_per_s"]), extra])
    return table(["benchmark", "median us", "ops/s", "notes"], rows)


def _flat(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flat(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        yield prefix.rstrip("."), ", ".join(str(v) for v in value)
    else:
        yield prefix.rstrip("."), value


def _demoted(markdown: str) -> list[str]:
    """A script's own report inside the summary: its headings two levels down."""
    lines = []
    for line in markdown.strip().splitlines():
        if line.startswith("#"):
            line = "##" + line if not line.startswith("# ") else "### " + line[2:]
        lines.append(line)
    return [*lines, ""]


def _matrix(summary: dict[str, Any]) -> list[str] | None:
    """{column: {figure: value}} (one column per generator, say) as one table."""
    if not summary or not all(isinstance(v, dict) for v in summary.values()):
        return None
    columns = list(summary)
    figures = list(dict.fromkeys(k for v in summary.values() for k in v))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, list):
            return "; ".join(str(v) for v in value)
        return "-" if value is None else str(value)

    rows = [[f"`{f}`", *(cell(summary[c].get(f)) for c in columns)] for f in figures]
    return table(["figure", *columns], rows)


def _collected(outcome: dict[str, Any]) -> list[str]:
    if outcome.get("markdown"):
        return _demoted(outcome["markdown"])
    matrix = _matrix(outcome.get("summary", {}))
    if matrix is not None:
        return matrix
    rows = [
        [f"`{key}`", f"{value:,.2f}" if isinstance(value, float) else f"{value}"]
        for key, value in _flat(outcome.get("summary", {}))
    ]
    return table(["figure", "value"], rows) if rows else []


SECTIONS = {
    "capacity": _capacity,
    "chat_10k": _chat_10k,
    "micro": _micro,
}


def render(
    index: dict[str, Any],
    outcomes: dict[str, dict[str, Any]],
    charts: dict[str, str],
    *,
    title: str = "rtbench benchmarks",
    chart_dir: str = "",
) -> str:
    lines = _header(index, title)
    lines += _goals(outcomes)
    for name, outcome in outcomes.items():
        lines += [f"## {outcome['title']}", ""]
        status = outcome.get("status", "ok")
        if status != "ok":
            lines += [f"**{status}**" + (": " + "; ".join(outcome["notes"]) if outcome["notes"]
                                          else ""), ""]  # fmt: skip
            if status == "skipped":
                continue
        if name == "fanout":
            lines += _fanout(outcome, charts, chart_dir)
        elif name == "latency_load":
            lines += _latency_load(outcome, charts, chart_dir)
        elif name in SECTIONS:
            lines += SECTIONS[name](outcome)
        else:
            lines += _collected(outcome)
        if status == "ok" and outcome.get("notes"):
            lines += [*(f"- {note}" for note in outcome["notes"]), ""]
        if outcome.get("commands"):
            shown = outcome["commands"][:8]
            more = len(outcome["commands"]) - len(shown)
            lines += [
                f"Commands ({outcome.get('seconds', 0):.0f} s in all"
                + (f"; {more} more in {name}.json" if more > 0 else "")
                + "):",
                "",
                "```sh",
                *shown,
                "```",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def publish(text: str, target: Path, root: Path | None = None) -> str:
    """``text`` plus the analysis kept from the previous ``target`` (if it had one).

    Paths under ``root`` (the checkout) are shown relative to it, as a reader types them.
    """
    if root is not None:
        text = text.replace(f"{root}/", "")
    if target.exists():
        previous = target.read_text()
        if ANALYSIS_MARKER in previous:
            return text + "\n" + previous[previous.index(ANALYSIS_MARKER) :]
    return text + f"\n{ANALYSIS_MARKER}\n## What limits each figure\n\n(to be written)\n"
