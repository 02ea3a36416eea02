"""Whose delay is it: the server's own figures and a truth probe beside the load.

A chat benchmark's step over its latency limit is the server's only if the generator
could not have put it there. The generator states a bound on its own delay
(``loadtest.judge``), but that bound is sampled by time while deliveries come in bursts,
so on a busy generator core it can fall short (2026-12-07: a probe beside the load saw
delivery p99 23-27 ms where the load measured 84-91 ms with a stated bound of 44 ms).
Two more witnesses are read around every step, and one rule weighs them all, for every
benchmark that judges a chat step against a limit (``latency_load`` at 100 ms,
``chat_10k`` at 10 ms):

- the reference server's own ack time (``rtbench_server_ack_seconds`` on its /metrics,
  from a send's frame handled to its ack written), the stages that ack was spent in
  (waiting for the committer, the commit, waiting for the loop after it) and its worst
  event-loop lag, scraped before and after the step (``server_figures``, ``own_side``);
- a truth probe (``benchmarks.truth_chat``: one light client pair on the generator core
  timing its own message every 20 ms in a room of its own) over the step's sends
  (``probed``; its figures go into the step with the load's own, ``chat_step``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.context import Context
from benchmarks.procs import LoadRun, PinnedServer, Sampler

ACK_HISTOGRAM = "rtbench_server_ack_seconds"
LOOP_LAG_MAX = "rtbench_server_loop_lag_max_seconds"
STAGE_HISTOGRAMS = {
    "wait": "rtbench_server_store_wait_seconds",  # per item: handled -> its transaction
    "commit": "rtbench_server_store_commit_seconds",  # per batch
    "callback": "rtbench_server_store_callback_seconds",  # per batch: commit end -> loop
}
"""The ack's stages, in order (docs/SERVER.md, metrics); what is left of it is the publish."""
OWN_HISTOGRAMS = ("ack", *STAGE_HISTOGRAMS)
"""The server's own histograms read around a step: its ack time, then the ack's stages."""


def bucket_keys(name: str) -> tuple[str, str]:
    """The step keys holding the p99 bucket of the server's histogram ``name`` (one of
    ``OWN_HISTOGRAMS``): its lower and its upper edge, in ms."""
    return f"server_{name}_floor_ms", f"server_{name}_p99_ms"


OWN_KEYS = tuple(key for name in OWN_HISTOGRAMS for key in bucket_keys(name))
"""The step keys ``own_side`` fills from the server's histograms (each a bucket edge)."""


def own_envelope(steps: list[dict[str, Any]]) -> dict[str, float | None]:
    """The server's own buckets over several runs of one step: the lowest floor and the
    highest upper edge, so every run's p99 lies inside. (A median of edges is no edge: two
    runs in the 15-20 and 20-50 ms buckets would read "17.5-35".)"""
    out: dict[str, float | None] = {}
    for name in OWN_HISTOGRAMS:
        for key, pick in zip(bucket_keys(name), (min, max), strict=True):
            values = [s[key] for s in steps if s.get(key) is not None]
            out[key] = pick(values) if values else None
    return out


def server_figures(url: str) -> dict[str, Any] | None:
    """The reference server's own ack histogram (cumulative bucket counts by upper edge),
    those of its stages, and its largest event-loop lag, from its /metrics; None for a
    server without them (the Node peer)."""
    base = url.replace("ws://", "http://", 1).rsplit("/", 1)[0]
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    wanted = {ACK_HISTOGRAM: "ack", **{v: k for k, v in STAGE_HISTOGRAMS.items()}}
    histograms: dict[str, dict[float, float]] = {}
    lag_max = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = wanted.get(sample.name.removesuffix("_bucket"))
            if name is not None and sample.name.endswith("_bucket"):
                histograms.setdefault(name, {})[float(sample.labels["le"])] = sample.value
            elif sample.name == LOOP_LAG_MAX:
                lag_max = sample.value
    buckets = histograms.pop("ack", None)
    if not buckets:
        return None
    return {"buckets": buckets, "stages": histograms, "loop_lag_max_s": lag_max}


def server_ack_p99_ms(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[float, float] | None:
    """The bucket holding the p99 of the acks between two scrapes, as (lower, upper) edges
    in ms: the server's own ack time at p99 was over the lower edge and at most the upper."""
    return _p99_between(before, after, "ack")


def _p99_between(
    before: dict[str, Any] | None, after: dict[str, Any] | None, name: str
) -> tuple[float, float] | None:
    """The p99 bucket of the server's histogram ``name`` between two ``server_figures``
    (None where either scrape is missing or the histogram counted nothing). The ack's is
    under "buckets"; a stage missing from the first scrape counts from zero."""
    if before is None or after is None:
        return None
    if name == "ack":
        return p99_bucket_ms(before["buckets"], after["buckets"])
    now = after.get("stages", {}).get(name)
    return p99_bucket_ms(before.get("stages", {}).get(name, {}), now) if now else None


def p99_bucket_ms(
    before: dict[float, float], after: dict[float, float]
) -> tuple[float, float] | None:
    """The bucket holding the p99 of what a histogram counted between two scrapes, as its
    (lower, upper) edges in ms; None when it counted nothing."""
    edges = sorted(after)
    delta = [after[e] - before.get(e, 0.0) for e in edges]
    total = delta[-1]  # the +Inf bucket: everything counted
    if total <= 0:
        return None
    lower = 0.0
    for edge, count in zip(edges, delta, strict=True):
        if count >= 0.99 * total:
            return lower * 1000.0, edge * 1000.0
        lower = edge
    return None  # (the +Inf bucket always holds everything)


def own_side(
    step: dict[str, Any], before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    """Put the server's own side of a step's sends into ``step`` (None where it has none):
    its ack p99 bucket, the p99 bucket of each of the ack's stages (``OWN_KEYS``) and its
    worst event-loop lag so far (a lifetime maximum: it can only make the rule below
    slower to clear the server)."""
    for name in OWN_HISTOGRAMS:
        edges = _p99_between(before, after, name)
        floor_key, p99_key = bucket_keys(name)
        step[floor_key] = edges[0] if edges else None
        step[p99_key] = edges[1] if edges else None
    lag = after["loop_lag_max_s"] if after else None
    step["server_loop_lag_max_ms"] = lag * 1000.0 if lag is not None else None


def chat_step(
    run: LoadRun,
    sampler: Sampler,
    plan: dict[str, Any],
    rate: float,
    truth: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One chat step's figures as ``generator_bounds`` weighs them: the load's own (from
    its results.json), the truth probe's (None each when it did not run) and the server's
    CPU over the sending window; ``own_side`` adds the server's own."""
    totals = run.results["totals"]
    latency = run.results.get("latency", {})
    delivery = latency.get("delivery", {})
    window = run.sending_window()
    seconds = (window[1] - window[0]) if window else plan["duration"]
    cpu = sampler.cpu_between(window[0], window[1] + 1.0) if window else None
    return {
        "rate_per_user": rate,
        # Sends span exactly --duration (the window's one-second buckets overhang it).
        "msgs_per_s": totals.get("sent", 0) / plan["duration"],
        "deliveries_per_s": totals.get("delivered", 0) / plan["duration"],
        "connections": totals.get("peak_connections", 0),
        "p50_ms": delivery.get("p50"),
        "p99_ms": delivery.get("p99"),
        "max_ms": delivery.get("max"),
        "ack_p99_ms": latency.get("ack", {}).get("p99"),
        "bound_p99_ms": delivery.get("bound", {}).get("p99"),
        # the probe's own messages: an upper bound on what the server took for one
        "truth_p99_ms": truth["delivery"]["p99"] if truth else None,
        "truth_ack_p99_ms": truth["ack"]["p99"] if truth else None,
        "truth_missed": truth["missed"] if truth else None,
        "server_cpu_percent": 100 * cpu / (seconds + 1.0) if cpu is not None else None,
        "generator_loop_lag_p99_ms": run.results.get("generator", {}).get("loop_lag_ms_p99"),
        "generator_core_percent": run.generator_core_percent_hot(),
        "generator_saturated": run.generator_saturated,
        "lost": totals.get("lost", 0),
        "errors": sum(totals.get("errors_by_code", {}).values()),
        "command": run.shown_command(),
    }


def generator_bounds(step: dict[str, Any], limit_ms: float) -> str | None:
    """Why the generator, not the server, may set this step's figure (None: it does not).

    Over the limit, the server's own p99 lies in [p99 - bound, p99]: when that range
    reaches under the limit the miss may be the generator's. The bound is the generator's
    own estimate, sampled by time, and a loaded generator core can add more than it says
    (deliveries come in bursts, while its timers are late): so a step over the limit whose
    truth probe saw the server deliver within the limit is the generator's too. A saturated
    generator under the limit is named as well: the next step would load it further.
    Where the server reports its own ack time, that decides first, either way: a p99 in a
    bucket above the limit is the server's whatever the generator's bound says, and a p99
    that, with the server's worst event-loop lag added, stays under the limit is not.
    """
    p99, bound = step["p99_ms"], step["bound_p99_ms"]
    # at the limit counts as over (latency_load's crossing is p99 >= its limit; chat_10k
    # passes a step at p99 <= its limit and asks only about steps above it)
    over = p99 is not None and p99 >= limit_ms
    floor, own = step.get("server_ack_floor_ms"), step.get("server_ack_p99_ms")
    lag = step.get("server_loop_lag_max_ms")
    if over and floor is not None and floor >= limit_ms:
        return None  # its own ack time at p99 was over the limit: the server's
    if over and own is not None and lag is not None and own + lag < limit_ms:
        return (
            f"the server's own ack time was at most {own:,.0f} ms at p99 and its event loop "
            f"never lagged {lag:,.0f} ms (its /metrics), against the {p99:,.1f} ms measured"
        )
    if over and p99 - (bound or 0.0) < limit_ms:
        return (
            f"its own delay, up to {bound or 0.0:,.1f} ms at p99, could explain the "
            f"{p99:,.1f} ms measured"
        )
    truth = step.get("truth_p99_ms")
    if over and truth is not None and truth < limit_ms and not step.get("truth_missed"):
        return (
            f"the truth probe beside it saw delivery p99 {truth:,.1f} ms against the "
            f"{p99:,.1f} ms the load measured"
        )
    if step["generator_saturated"]:
        core = step.get("generator_core_percent")
        return "it saturated" + (f" (its processes at {core:.0f} % of its core)" if core else "")
    return None


def probed(
    ctx: Context, url: str, ramp_s: float, duration_s: float, step: Callable[[], LoadRun], name: str
) -> tuple[LoadRun, dict[str, Any] | None]:
    """Run ``step`` (one load run) with the chat truth probe beside it on the generator
    core, timing its own messages over the measured phase; the probe's result, or None
    (logged) when it failed."""
    # the load's processes start, connect over the ramp and then send for the duration:
    # the probe starts a second after the ramp and stops a second before the sends end
    delay_s = ramp_s + 1.0
    seconds = max(0.5, duration_s - 2.0)
    with tempfile.TemporaryDirectory(prefix="rtbench-truth-") as folder:
        out = Path(folder) / "truth.json"
        probe = subprocess.Popen(
            [*ctx.cores.client_prefix(), sys.executable, "-m", "benchmarks.truth_chat",
             url, f"{delay_s:g}", f"{seconds:g}", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            run = step()
            _, err = probe.communicate(timeout=delay_s + seconds + 30)
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.wait()
        if probe.returncode != 0 or not out.exists():
            ctx.log(f"{name}: the truth probe failed ({(err or '').strip()[-200:]})")
            return run, None
        return run, json.loads(out.read_text())


def witnessed_step(
    ctx: Context,
    server: PinnedServer,
    sampler: Sampler,
    plan: dict[str, Any],
    rate: float,
    step: Callable[[], LoadRun],
    name: str,
) -> dict[str, Any]:
    """One chat step (``step``, one load run at ``rate``) with both witnesses: the truth
    probe beside it and the server's /metrics read before and after; its figures
    (``chat_step`` and ``own_side``), ready for ``generator_bounds``."""
    before = server_figures(server.url)
    run, truth = probed(ctx, server.url, plan["ramp"], plan["duration"], step, name)
    after = server_figures(server.url)
    figures = chat_step(run, sampler, plan, rate, truth)
    own_side(figures, before, after)  # the server's side of the same sends
    return figures
