"""Messages per generator CPU-second of the phoenix, actioncable, pusher, centrifugo and sse
adapters against their test servers (reports/adapters-phoenix-cable-pusher-centrifugo.md).

The servers are the small Python test servers in ``tests/thirdparty/`` (no Phoenix,
Rails, Soketi or Centrifugo installs on these machines): the figure is the adapter's
and the engine's cost per message, not a measure of those servers. The generic adapter
against ``json_server`` (the same kind of server) is the peer the ratios are taken
against. Each run: ``rtbench run chat`` with the generator pinned to core 1 (``taskset
-c 1``) and the server to core 0, under the machine lock; the figure is (sends +
counted deliveries) / generator CPU-seconds over the seconds that sent, read from
results.json's per-second series; medians of ``--runs``.

    python -m benchmarks.adapters_cpu            # 3 runs each, writes the report
    python -m benchmarks.adapters_cpu --runs 1 --no-report
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.kit import median_of
from benchmarks.lock import exclusive_machine
from benchmarks.procs import Cores

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "adapters-phoenix-cable-pusher-centrifugo.md"
sys.path.insert(0, str(ROOT))  # tests.thirdparty.servers (the test servers' launcher)

from tests.thirdparty.conftest import GENERIC_OPTIONS  # noqa: E402
from tests.thirdparty.servers import ServerProc  # noqa: E402

CORES = Cores.detect()
PROTOCOLS: dict[str, tuple[str, dict]] = {
    "generic": ("tests.thirdparty.json_server", GENERIC_OPTIONS),
    "phoenix": ("tests.thirdparty.phoenix_server", {}),
    "actioncable": ("tests.thirdparty.actioncable_server", {}),
    "pusher": ("tests.thirdparty.pusher_server", {}),
    "centrifugo": ("tests.thirdparty.centrifugo_server", {}),
    "sse": ("tests.thirdparty.sse_server", {}),  # sse-starlette on uvicorn
}
HTTP_TARGETS = {"sse"}  # named by http://, not ws://
LOAD = {"users": 200, "room_size": 10, "rate": 2.0, "duration": 10.0, "ramp": 1.0}


def toml(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return json.dumps(value)


def one_run(protocol: str, folder: Path) -> dict[str, float]:
    module, options = PROTOCOLS[protocol]
    server = ServerProc(module).start()
    try:
        CORES.pin_server(server.proc.pid)  # type: ignore[union-attr]
        folder.mkdir(parents=True, exist_ok=True)
        scenario = folder / f"{protocol}.toml"
        lines = ['scenario = "chat"', f'protocol = "{protocol}"', "drain = 5.0"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in LOAD.items()]
        lines += ["[protocol_options]", *(f"{k} = {toml(v)}" for k, v in options.items())]
        scenario.write_text("\n".join(lines) + "\n")
        out = folder / protocol
        target = server.url
        if protocol in HTTP_TARGETS:
            target = f"http://127.0.0.1:{server.port}"
        command = [*CORES.client_prefix(), sys.executable, "-c",
                   "from rtbench.entry import run; run()", "run", str(scenario),
                   "--target", target, "--out", str(out), "--quiet"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        # 1: a verdict failed, 4: inconclusive (the generator saturated): figures all the same
        if done.returncode not in (0, 1, 4):
            raise RuntimeError(
                f"{protocol}: exit {done.returncode}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
            )
    finally:
        server.close()
    results = json.loads((out / "results.json").read_text())
    sending = [s for s in results["series"] if s.get("sent")]
    cpu_s = sum(s.get("generator_cpu") or 0.0 for s in sending) / 100.0
    messages = sum(s.get("sent", 0) + s.get("delivered", 0) for s in sending)
    totals = results["totals"]
    return {
        "msgs_per_cpu_s": messages / cpu_s if cpu_s else 0.0,
        "cpu_percent": 100.0 * cpu_s / max(1, len(sending)),
        "msgs_per_s": messages / max(1, len(sending)),
        "lost": totals.get("lost", 0),
        "p99_ms": results["latency"]["delivery"].get("p99", 0.0),
    }


def measure(runs: int) -> dict[str, list[dict[str, float]]]:
    figures: dict[str, list[dict[str, float]]] = {p: [] for p in PROTOCOLS}
    with exclusive_machine("adapter CPU figures"), tempfile.TemporaryDirectory() as tmp:
        CORES.pin_self()
        for i in range(runs):
            for protocol in PROTOCOLS:  # interleaved: drift hits every adapter alike
                figures[protocol].append(one_run(protocol, Path(tmp) / f"r{i}"))
    return figures


def render(figures: dict[str, list[dict[str, float]]], runs: int) -> str:
    peer = median_of(figures["generic"], "msgs_per_cpu_s")
    load = LOAD
    lines = [
        "# Adapters: Phoenix, Action Cable, Pusher, Centrifugo, SSE — generator cost per message",
        "",
        "**These are test servers, not the real ones.** No Phoenix, Rails, Soketi/Reverb or",
        "Centrifugo installs on these machines, so each adapter ran against the small Python",
        "server in `tests/thirdparty/` that implements its protocol from the public docs. The",
        "figure is the load generator's cost (the adapter plus the engine) per message, which",
        "does not depend on which server answers; it says nothing of the real servers' speed.",
        "SSE ran against `tests/thirdparty/sse_server.py`, a pub/sub on sse-starlette and",
        "uvicorn from PyPI (one event stream and one POST lane per client).",
        "",
        f"Load: `rtbench run chat`, {load['users']} users in rooms of {load['room_size']},",
        f"{load['rate']} msg/s each, {load['duration']:.0f} s; generator pinned to core",
        f"{CORES.client}, server to core {CORES.server}; under the machine lock. Messages are",
        "sends plus counted deliveries (the sender's own copies that Phoenix, Action Cable and",
        "Centrifugo send back are parsed but not counted); CPU is the generator's, summed over",
        f"the seconds that sent (results.json series). Medians of {runs} runs, interleaved.",
        "",
        "| adapter | msgs / generator CPU-s | vs generic | generator CPU % | msgs/s | lost"
        " | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for protocol, rows in figures.items():
        rate = median_of(rows, "msgs_per_cpu_s")
        lines.append(
            f"| `{protocol}` | {rate:,.0f} | {rate / peer:.2f}x | "
            f"{median_of(rows, 'cpu_percent'):.1f} | {median_of(rows, 'msgs_per_s'):,.0f} | "
            f"{max(int(r['lost']) for r in rows)} | {median_of(rows, 'p99_ms'):.1f} |"
        )
    lines += [
        "",
        "`generic` (against `json_server`, the same kind of Python test server) is the peer;",
        "lost is the worst run's.",
        "",
        "Produced by:",
        "",
        "```sh",
        f"python -m benchmarks.adapters_cpu --runs {runs}",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    figures = measure(args.runs)
    text = render(figures, args.runs)
    print(text)
    if not args.no_report:
        REPORT.write_text(text)


if __name__ == "__main__":
    main()
