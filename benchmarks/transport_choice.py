"""Which WebSocket library should the reference server sit on? Measure, then choose.

Runs the real reference server (``rtbench serve``, memory store, so the disk is not
the subject) pinned to CPU 0, and drives it from this process on CPU 1 with a
picows client (the fastest client measured here, so the client is not what is
being measured). For each transport:

- idle connections: open N connections that each say hello, then read the
  server's RSS: (RSS with N - RSS before) / N is the memory one idle client costs;
- fan-out: 1,000 clients in one room, one sender publishing as fast as acks
  allow (a window of unacked sends); deliveries per *server* CPU-second.
- heartbeat cost: server CPU with N idle connections being pinged and answering.

    .venv/bin/python -m benchmarks.transport_choice

(it takes the machine lock, /tmp/rtbench-bench.lock, itself: do not wrap it in flock). Writes
reports/transport-choice.md (or --out) with the figures and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.lock import exclusive_machine

SERVER_CPU, CLIENT_CPU = 0, 1
CONNECT_CONCURRENCY = 200


class Counter(WSListener):
    """Client side: counts frames, answers nothing but pings (picows auto-pong)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.transport: WSTransport | None = None
        self.welcome: asyncio.Future[None] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        bench = self.bench
        bench.frames += 1
        if bench.frames == bench.expected:
            bench.done.set()
        if self.welcome is not None and not self.welcome.done():
            self.welcome.set_result(None)
        elif self.bench.acks is not None and frame.get_payload_as_bytes().startswith(
            b'{"type":"ack"'
        ):
            self.bench.acks.release()


class Bench:
    def __init__(self) -> None:
        self.frames = 0
        self.expected = -1  # frames that end the fan-out phase
        self.done = asyncio.Event()
        self.acks: asyncio.Semaphore | None = None


def _start_server(
    transport: str, config: str, workdir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start ``rtbench serve`` (or the bare peer, transport "bare") pinned to SERVER_CPU."""
    if transport == "bare":
        cmd = [sys.executable, "-m", "benchmarks.bare_picows", "--port", "0"]
    else:
        cfg = workdir / f"{transport}.toml"
        cfg.write_text(config)
        cmd = [sys.executable, "-c", "from rtbench.entry import run; run()", "serve", "--port", "0"]
        cmd += ["--store", "memory", "--insecure-dev", "--transport", transport]
        cmd += ["--config", str(cfg)]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, cwd=Path.cwd(), env={**os.environ, **(env or {})}
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            port = int(line.split("ws://127.0.0.1:")[1].split("/")[0])
            os.sched_setaffinity(proc.pid, {SERVER_CPU})
            return proc, port
    raise RuntimeError(f"{transport} server did not start")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _open(port: int, n: int, bench: Bench, room: str | None = None) -> list[Counter]:
    """Open n connections that said hello (and joined ``room``); returns their listeners."""
    url = f"ws://127.0.0.1:{port}/ws"
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    loop = asyncio.get_running_loop()

    async def one(i: int) -> Counter:
        async with gate:
            _, listener = await ws_connect(
                lambda: Counter(bench),
                url,
                read_buffer_init_size=2048,
                websocket_handshake_timeout=60,
            )
            assert isinstance(listener, Counter) and listener.transport is not None
            listener.welcome = loop.create_future()
            hello = {"type": "hello", "token": f"u{i}"}
            listener.transport.send(WSMsgType.TEXT, msgspec.json.encode(hello))
            await listener.welcome
            if room is not None:
                listener.welcome = loop.create_future()
                join = {"type": "join", "room": room}
                listener.transport.send(WSMsgType.TEXT, msgspec.json.encode(join))
                await listener.welcome
            listener.welcome = None
            return listener

    return await asyncio.gather(*(one(i) for i in range(n)))


async def _close(conns: list[Counter]) -> None:
    for c in conns:
        if c.transport is not None:
            c.transport.disconnect(graceful=False)
    await asyncio.sleep(0.5)


def _settle_rss(pid: int) -> int:
    time.sleep(1.0)
    return psutil.Process(pid).memory_info().rss


async def idle_rss(port: int, pid: int, n: int) -> float:
    before = _settle_rss(pid)
    conns = await _open(port, n, Bench())
    after = _settle_rss(pid)
    await _close(conns)
    return (after - before) / n


async def fanout(port: int, pid: int, room_size: int, messages: int, window: int) -> float:
    bench = Bench()
    receivers = await _open(port, room_size - 1, bench, room="fan")
    [sender] = await _open(port, 1, bench, room="fan")
    assert sender.transport is not None
    await asyncio.sleep(0.5)
    bench.frames = 0
    bench.acks = asyncio.Semaphore(window)
    bench.expected = messages * (room_size - 1) + messages  # deliveries + acks
    proc = psutil.Process(pid)
    run = os.urandom(4).hex()  # fresh cids: a repeated one is (rightly) not broadcast again
    cpu0 = sum(proc.cpu_times()[:2])
    for i in range(messages):
        await bench.acks.acquire()
        frame = {"type": "send", "room": "fan", "cid": f"{run}-{i}", "body": "x" * 100}
        sender.transport.send(WSMsgType.TEXT, msgspec.json.encode(frame))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(120):
            await bench.done.wait()
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    delivered = bench.frames - messages
    await _close([*receivers, sender])
    return delivered / cpu


class Resumer(WSListener):
    """Reconnect-storm client: says hello with resume, waits for that room's ``joined``."""

    def __init__(self, done: asyncio.Future[None] | None) -> None:
        self.done = done
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        done = self.done
        joined = frame.get_payload_as_bytes().startswith(b'{"type":"joined"')
        if joined and done is not None and not done.done():
            done.set_result(None)


async def recovery(port: int, pid: int, n: int, missed: int) -> dict[str, float]:
    """n members of one room lose their connections, miss ``missed`` messages, all come back.

    Returns wall seconds until every client has its replay and ``joined``, and
    reconnects (handshake + hello + resume + replay) per server CPU-second.
    """
    url = f"ws://127.0.0.1:{port}/ws"
    bench = Bench()
    members = await _open(port, n, bench, room="storm")
    [sender] = await _open(port, 1, bench, room="storm")
    assert sender.transport is not None
    await _close(members)
    for i in range(missed):
        frame = {"type": "send", "room": "storm", "cid": f"s{i}", "body": "x" * 100}
        sender.transport.send(WSMsgType.TEXT, msgspec.json.encode(frame))
    await asyncio.sleep(1.0)  # committed and in the ring
    loop = asyncio.get_running_loop()
    proc = psutil.Process(pid)
    cpu0 = sum(proc.cpu_times()[:2])
    started = time.perf_counter()

    async def back(i: int) -> Resumer:
        done = loop.create_future()
        _, listener = await ws_connect(lambda: Resumer(done), url, websocket_handshake_timeout=60)
        assert isinstance(listener, Resumer) and listener.transport is not None
        hello = {"type": "hello", "token": f"u{i}", "resume": {"storm": 0}}
        listener.transport.send(WSMsgType.TEXT, msgspec.json.encode(hello))
        await done
        return listener

    clients = await asyncio.gather(*(back(i) for i in range(n)))
    wall = time.perf_counter() - started
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    for c in [*clients]:
        if c.transport is not None:
            c.transport.disconnect(graceful=False)
    await _close([sender])
    return {"wall_s": wall, "reconnects_per_server_cpu_s": n / cpu}


async def heartbeat_cpu(port: int, pid: int, n: int, seconds: float) -> float:
    conns = await _open(port, n, Bench())
    proc = psutil.Process(pid)
    await asyncio.sleep(3)  # past the first interval: pings are flowing
    cpu0 = sum(proc.cpu_times()[:2])
    await asyncio.sleep(seconds)
    share = (sum(proc.cpu_times()[:2]) - cpu0) / seconds
    await _close(conns)
    return share * 100


def config_text(read_buffer: int, interval_ms: int = 600000) -> str:
    return (
        f"[listen]\nread_buffer_bytes = {read_buffer}\n"
        f"[timing]\nheartbeat_interval_ms = {interval_ms}\nheartbeat_timeout_ms = 3000\n"
        "[limits]\nmax_rooms = 10\n"
    )


def variants(args: argparse.Namespace) -> list[tuple[str, str, str, int, dict[str, str], bool]]:
    """(name, label, transport, read buffer, environment, measure fan-out too)."""
    first = args.read_buffers[0]
    aiofastnet = {"RTBENCH_PICOWS_AIOFASTNET": "1"}
    return [
        (
            f"picows-{b}",
            f"reference, picows (read buffer {b} B)",
            "picows",
            b,
            {},
            b == first,
        )
        for b in args.read_buffers
    ] + [
        (
            "picows-aiofastnet",
            f"reference, picows + aiofastnet (read buffer {first} B)",
            "picows",
            first,
            aiofastnet,
            False,  # its server timed out handshakes of 1,000 concurrent connects here
        ),
        ("websockets", "reference, websockets", "websockets", first, {}, True),
        ("bare", "bare picows broadcast, no application (ceiling)", "bare", first, {}, True),
    ]


async def main_async(args: argparse.Namespace, results: dict[str, Any], save: Any) -> None:
    """Measure the chosen variants into ``results`` (saved after each one)."""
    workdir = Path(tempfile.mkdtemp(prefix="rtbench-transport-"))
    for name, label, transport, read_buffer, env, with_fanout in variants(args):
        if args.only and name not in args.only:
            continue
        rss: list[float] = []
        fan: dict[int, list[float]] = {w: [] for w in args.windows}
        for _ in range(args.runs):
            proc, port = _start_server(transport, config_text(read_buffer), workdir, env)
            try:
                rss.append(await idle_rss(port, proc.pid, args.idle))
            finally:
                _stop(proc)
            if not with_fanout:
                continue
            proc, port = _start_server(transport, config_text(read_buffer), workdir, env)
            try:  # a fresh server: nothing left over from ten thousand closed connections
                for window in args.windows:
                    fan[window].append(
                        await fanout(port, proc.pid, args.room, args.messages, window)
                    )
            finally:
                _stop(proc)
        results["servers"][name] = {
            "label": label,
            "rss_per_idle_conn_bytes": statistics.median(rss),
            "fanout_per_server_cpu_s": {str(w): statistics.median(v) for w, v in fan.items() if v},
        }
        print(label, results["servers"][name], file=sys.stderr, flush=True)
        save()
    if not args.only or "recovery" in args.only:
        runs = []
        for _ in range(args.runs):
            proc, port = _start_server("picows", config_text(args.read_buffers[0]), workdir)
            try:
                runs.append(await recovery(port, proc.pid, args.idle, args.missed))
            finally:
                _stop(proc)
        results["recovery"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print("recovery", results["recovery"], file=sys.stderr, flush=True)
        save()
    for interval in args.heartbeats:
        if args.only and f"heartbeat-{interval}" not in args.only:
            continue
        proc, port = _start_server("picows", config_text(args.read_buffers[0], interval), workdir)
        try:
            cpu = await heartbeat_cpu(port, proc.pid, args.idle, args.hb_seconds)
        finally:
            _stop(proc)
        results["heartbeat_cpu_percent"][str(interval)] = cpu
        print(f"heartbeat {interval} ms: {cpu:.1f} % CPU", file=sys.stderr)
        save()


def render(results: dict[str, Any]) -> str:
    setup = results["setup"]
    windows = setup["windows"]
    lines = [
        "# Transport choice: picows vs websockets under the reference server",
        "",
        "Commands (each variant row comes from the last command that measured it):",
        "",
        *(f"- `{c}`" for c in results["commands"]),
        "",
        f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; server pinned to "
        f"CPU {SERVER_CPU}, picows+uvloop client on CPU {CLIENT_CPU}; memory store; medians of "
        f"{setup['runs']} runs. Idle: {setup['idle']:,} connections after hello. Fan-out: one "
        f"room of {setup['room']:,}, {setup['messages']} sends of 100-byte bodies, with "
        + " or ".join(str(w) for w in windows)
        + " sends in flight (the next send waits for an ack).",
        "",
        "| server | RSS per idle connection | "
        + " | ".join(f"fan-out deliveries per server CPU-s, {w} in flight" for w in windows)
        + " |",
        "|---|---|" + "---|" * len(windows),
    ]
    for row in results["servers"].values():
        fan = row["fanout_per_server_cpu_s"]
        cells = " | ".join(f"{fan[str(w)]:,.0f}" if str(w) in fan else "" for w in windows)
        lines.append(
            f"| {row['label']} | {row['rss_per_idle_conn_bytes'] / 1024:.1f} KB | {cells} |"
        )
    lines += [
        "",
        f"Heartbeat cost, picows, {setup['idle']:,} idle connections answering pings "
        f"(timeout 3 s), server CPU over {setup['hb_seconds']:.0f} s:",
        "",
        "| heartbeat interval | server CPU |",
        "|---|---|",
    ]
    for interval, cpu in sorted(results["heartbeat_cpu_percent"].items(), key=lambda x: int(x[0])):
        lines.append(f"| {interval} ms | {cpu:.1f} % |")
    rec = results.get("recovery")
    if rec:
        lines += [
            "",
            f"Reconnect storm: {setup['idle']:,} members of one room drop at once, miss "
            f"{setup.get('missed', 0)} messages, and all reconnect at once with "
            "`hello.resume` (handshake, hello, replay from the ring, `joined`): every client "
            f"had its replay after **{rec['wall_s']:.2f} s** (wall); "
            f"{rec['reconnects_per_server_cpu_s']:,.0f} reconnects per server CPU-second.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--room", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--read-buffers", type=int, nargs="+", default=[2048, 1024, 4096, 16384])
    parser.add_argument("--heartbeats", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--hb-seconds", type=float, default=10.0)
    parser.add_argument("--missed", type=int, default=20, help="messages missed in the storm")
    parser.add_argument("--out", type=Path, default=Path("reports/transport-choice.md"))
    parser.add_argument(
        "--only",
        nargs="+",
        help="variants to (re)measure: picows-2048, picows-aiofastnet, "
        "websockets, bare, heartbeat-1000, ... (others keep their saved figures)",
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {CLIENT_CPU})
    command = ("python -m benchmarks.transport_choice " + " ".join(sys.argv[1:])).strip()
    saved = args.out.with_suffix(".json")
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() and args.only else {}
    results.setdefault("servers", {})
    results.setdefault("heartbeat_cpu_percent", {})
    results["commands"] = [*results.get("commands", []), command]
    results["setup"] = {
        k: getattr(args, k)
        for k in ("idle", "room", "messages", "runs", "windows", "hb_seconds", "missed")
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        saved.write_text(json.dumps(results, indent=1) + "\n")
        previous = args.out.read_text() if args.out.exists() else ""
        marker = "\n## Why the default\n"
        why = previous[previous.index(marker) :] if marker in previous else ""
        args.out.write_text(render(results) + why)

    with exclusive_machine("transport_choice"):
        uvloop.run(main_async(args, results, save))
    print(render(results))


if __name__ == "__main__":
    main()
