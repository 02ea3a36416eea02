"""Server CPU per reconnect-and-resume (the reference server) vs per bare handshake (Node ws).

A reconnect storm is bound by the server's CPU per returning client (reports/recovery.md):
TCP accept, WebSocket upgrade, ``hello`` with its token and ``resume`` offsets, the replay
of what the client missed, and the close of the connection. This measures that cost on
the reference server beside the cost of a bare WebSocket handshake (connect + close, no
application) on the Node ``ws`` echo peer and on a bare picows server (the floor of the
Python WebSocket stack the reference server runs on), in one run, with one client:

- setup: ``--clients`` users connect (token in ``hello``, as the native engine sends it),
  join rooms of 10 and leave;
- every round, while they are away, writer connections send ``--missed`` messages into
  each room (acked, so durable); then all clients come back at once, ``--in-flight`` at a
  time: ``hello`` with the token and ``resume`` {room: last seq seen}, the replay, the
  ``joined`` that ends it (every replayed seq checked), close. The reference server's CPU
  (user + system, all threads, read by psutil from outside) over the storm, divided by
  the clients, is its CPU per reconnect-and-resume;
- in the same round, the same client opens and closes ``--clients`` bare WebSockets on
  the Node peer and on the bare picows server: their CPU per handshake.

Rounds alternate (reference, Node, picows, reference, ...), so drift falls on all alike;
medians of ``--rounds``. Servers on one core, this client on the other (taskset), the
machine lock held throughout.

    .venv/bin/python -m benchmarks.reconnect_cost                    # 5,000 clients, 5 rounds
    .venv/bin/python -m benchmarks.reconnect_cost --quick            # 300 clients, 2 rounds
    .venv/bin/python -m benchmarks.reconnect_cost --out reports/reconnect-cost.md
    .venv/bin/python -m benchmarks.reconnect_cost --jwt              # HS256 tokens
    .venv/bin/python -m benchmarks.reconnect_cost --before /tmp/old  # + a server from /tmp/old

Prints every round, the medians and the ratio, and JSON last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks.lock import exclusive_machine
from benchmarks.procs import (
    RTBENCH,
    Cores,
    NodePeer,
    PinnedServer,
    ReferenceServer,
    node_versions,
    workdir,
)
from rtbench.protocol import decode_server, encode
from rtbench.protocol import messages as m

ROOM_SIZE = 10
ROOMS_PER_WRITER = 100  # the server's default max_rooms per connection
SETTLE_S = 0.25
"""After the last close, before the server's CPU is read again: the server handles the
closes after the client has sent them (the same wait for every server)."""
TIMEOUT_S = 60.0  # one storm; far past any round on this machine: a hang is a failure


class Reference(ReferenceServer):
    """``rtbench serve`` with its defaults but the presence grace, which is set explicitly.

    Whether a returning user is announced ``online`` depends on how long they were away
    against ``presence_grace_ms``; a round's away time is near the default grace (3 s),
    so it is set: long (the default here: everyone back within it, as after a network
    cut) or 0 (every return announced, every close too).
    """

    def __init__(
        self,
        cores: Cores,
        workdir: Path,
        store: str,
        grace_ms: int,
        tree: Path | None = None,
        secret: str | None = None,
    ) -> None:
        config = workdir / "server.toml"
        config.write_text(f"[timing]\npresence_grace_ms = {grace_ms}\n")
        url = f"sqlite:///{workdir / 'bench.db'}" if store == "sqlite" else "memory"
        auth = [] if secret else ["--insecure-dev"]  # the secret goes in the environment
        command = [*RTBENCH, "serve", "--port", "0", *auth, "--store", url]
        env = {"PYTHONPATH": str(tree.resolve())} if tree is not None else {}
        if secret:
            env["RTBENCH_JWT_SECRET"] = secret
        PinnedServer.__init__(self, [*command, "--config", str(config)], workdir, cores, env)


class BareServer(PinnedServer):
    """benchmarks/bare_picows.py: the picows WebSocket stack with no application."""

    kind = "bare picows server"
    shown = "python -m benchmarks.bare_picows --port $PORT"

    def __init__(self, cores: Cores, root: Path) -> None:
        command = [sys.executable, "-m", "benchmarks.bare_picows", "--port", "0"]
        super().__init__(command, root, cores, {})


# -- the client ---------------------------------------------------------------------------------


class Returning(WSListener):
    """One client coming back: hello with resume, then the replay up to ``joined``."""

    def __init__(self, user: str, token: str, room: str, since: int, missed: int) -> None:
        self.user, self.room, self.since, self.missed = user, room, since, missed
        self.token = token
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.seqs: list[int] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        hello = m.Hello(token=self.token, resume={self.room: self.since}, client="reconnect_cost")
        transport.send(WSMsgType.TEXT, encode(hello))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT or self.done.done():
            return
        msg = decode_server(frame.get_payload_as_bytes())
        if type(msg) is m.Message:
            self.seqs.append(msg.seq)
        elif type(msg) is m.Joined:
            self._finish(msg)
        elif type(msg) is m.Error:
            self.done.set_exception(RuntimeError(f"{self.user}: error {msg.code}: {msg.message}"))

    def _finish(self, joined: m.Joined) -> None:
        expected = list(range(self.since + 1, joined.seq + 1))
        if not (joined.resumed and joined.recovered and self.seqs == expected):
            problem = f"seqs {self.seqs} for {expected}, resumed {joined.resumed}"
            self.done.set_exception(RuntimeError(f"{self.user} in {self.room}: {problem}"))
        elif len(expected) != self.missed:
            self.done.set_exception(
                RuntimeError(f"{self.user}: {len(expected)} replayed, {self.missed} were sent")
            )
        else:
            self.done.set_result(joined.seq)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"{self.user}: closed before joined"))


class Chat(WSListener):
    """A plain reference-protocol client: answers are matched to requests by id."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT:
            return
        msg = decode_server(frame.get_payload_as_bytes())
        rid = getattr(msg, "id", None)
        future = self.waiting.pop(rid, None) if isinstance(rid, int) else None
        if future is None or future.done():
            return
        if type(msg) is m.Error:
            future.set_exception(RuntimeError(f"error {msg.code}: {msg.message}"))
        else:
            future.set_result(msg)

    def request(self, msg: Any) -> asyncio.Future[Any]:
        assert self.transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[msg.id] = future
        self.transport.send(WSMsgType.TEXT, encode(msg))
        return future


async def _chat(url: str, token: str) -> tuple[WSTransport, Chat]:
    transport, chat = await ws_connect(Chat, url, use_aiofastnet=False, max_redirects=0)
    await chat.request(m.Hello(token=token, id=0))
    return transport, chat


@dataclass
class Storm:
    """The clients of the reference server and what each has seen."""

    url: str
    clients: int
    missed: int
    in_flight: int
    secret: str | None = None  # HS256 tokens (signed once per user), or the user id
    tokens: dict[str, str] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)  # room -> seq every member saw

    def token(self, user: str) -> str:
        """The user's token: signed once and presented on every reconnect, as a client
        keeps its token until it expires (the native engine signs one per connect)."""
        if not self.secret:
            return user
        token = self.tokens.get(user)
        if token is None:
            import jwt  # PyJWT, only for --jwt runs

            claims = {"sub": user, "exp": int(time.time()) + 3600}
            token = self.tokens[user] = jwt.encode(claims, self.secret, algorithm="HS256")
        return token

    def user(self, i: int) -> str:
        return f"u{i}"

    def room(self, i: int) -> str:
        return f"r{i // ROOM_SIZE}"

    async def setup(self) -> None:
        """Every client joins its room once (the server makes them members), then leaves."""

        async def one(i: int) -> None:
            transport, chat = await _chat(self.url, self.token(self.user(i)))
            joined = await chat.request(m.Join(room=self.room(i), id=1))
            self.last_seq[self.room(i)] = joined.seq
            transport.disconnect(graceful=False)

        await _bounded(self.in_flight, (one(i) for i in range(self.clients)))

    async def write_missed(self) -> None:
        """While the clients are away: ``missed`` acked messages into every room."""
        rooms = sorted(self.last_seq)
        groups = [rooms[i : i + ROOMS_PER_WRITER] for i in range(0, len(rooms), ROOMS_PER_WRITER)]

        async def writer(j: int, names: list[str]) -> None:
            transport, chat = await _chat(self.url, self.token(f"writer{j}"))
            req = iter(range(1, 1_000_000))
            await asyncio.gather(*(chat.request(m.Join(room=n, id=next(req))) for n in names))
            sends = [
                chat.request(m.Send(room=n, cid=f"{time.time_ns()}-{k}", body="x" * 100, id=r))
                for n in names
                for k in range(self.missed)
                for r in (next(req),)
            ]
            await asyncio.gather(*sends)  # acked: durable before the clients come back
            transport.disconnect(graceful=False)

        await asyncio.gather(*(writer(j, names) for j, names in enumerate(groups)))

    async def storm(self) -> None:
        """Every client back at once (``in_flight`` opening at a time), resumed, closed."""
        opened: list[WSTransport] = []
        seen: dict[str, int] = {}

        async def one(i: int) -> None:
            room = self.room(i)
            user, since = self.user(i), self.last_seq[room]
            token = self.token(user)
            transport, client = await ws_connect(
                lambda: Returning(user, token, room, since, self.missed),
                self.url,
                use_aiofastnet=False,
                max_redirects=0,
            )
            opened.append(transport)
            seen[room] = await client.done

        await _bounded(self.in_flight, (one(i) for i in range(self.clients)))
        for transport in opened:
            transport.disconnect(graceful=False)
        self.last_seq.update(seen)


async def _bounded(limit: int, coros: Iterator[Any]) -> None:
    gate = asyncio.Semaphore(limit)

    async def gated(coro: Any) -> None:
        async with gate:
            await coro

    async with asyncio.timeout(TIMEOUT_S):
        await asyncio.gather(*(gated(c) for c in coros))


async def handshakes(url: str, count: int, in_flight: int) -> None:
    """``count`` bare WebSockets (connect, upgrade), then all closed."""
    opened: list[WSTransport] = []

    async def one() -> None:
        transport, _ = await ws_connect(WSListener, url, use_aiofastnet=False, max_redirects=0)
        opened.append(transport)

    await _bounded(in_flight, (one() for _ in range(count)))
    for transport in opened:
        transport.disconnect(graceful=False)


async def measured(server: PinnedServer, work: Any) -> tuple[float, float]:
    """The server's (user, system) CPU-seconds over ``work`` and the settling of its closes."""
    before = server.ps.cpu_times()
    await work
    await asyncio.sleep(SETTLE_S)  # the server handles the last closes (see SETTLE_S)
    after = server.ps.cpu_times()
    return after.user - before.user, after.system - before.system


# -- the run ------------------------------------------------------------------------------------

STORMS = ("reference", "before")  # servers that get the reconnect-and-resume storm
PEERS = ("node", "picows")  # servers that get bare handshakes


async def measure(
    servers: dict[str, PinnedServer], args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per round, microseconds of server CPU per reconnect (reference) / handshake (peers),
    and of it the kernel's (system) share."""
    storms = {
        name: Storm(servers[name].url, args.clients, args.missed, args.in_flight, args.secret)
        for name in STORMS
        if name in servers
    }
    for storm in storms.values():
        await storm.setup()
    names = [*storms, *PEERS]
    per_op: dict[str, list[float]] = {name: [] for name in names}
    sys_op: dict[str, list[float]] = {name: [] for name in names}
    for n in range(1, args.rounds + 1):
        for name, storm in storms.items():
            await storm.write_missed()
            await asyncio.sleep(SETTLE_S)  # the writers' closes, before the window opens
            user, system = await measured(servers[name], storm.storm())
            per_op[name].append((user + system) / args.clients * 1e6)
            sys_op[name].append(system / args.clients * 1e6)
        for name in PEERS:
            work = handshakes(servers[name].url, args.clients, args.in_flight)
            user, system = await measured(servers[name], work)
            per_op[name].append((user + system) / args.clients * 1e6)
            sys_op[name].append(system / args.clients * 1e6)
        print(
            f"round {n}: "
            + ", ".join(
                f"{name} {per_op[name][-1]:.0f} us (sys {sys_op[name][-1]:.0f})" for name in names
            )
            + f"; ratio {per_op['reference'][-1] / per_op['node'][-1]:.2f}",
            flush=True,
        )
    return per_op, sys_op


@contextlib.contextmanager
def servers_started(cores: Cores, args: argparse.Namespace) -> Iterator[dict[str, PinnedServer]]:
    root = Path(__file__).resolve().parent.parent
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(workdir("rtbench-reconnect-"))
        servers: dict[str, PinnedServer] = {}
        grace = args.presence_grace_ms
        secret = args.secret
        reference = Reference(cores, tmp, args.store, grace, None, secret)
        servers["reference"] = stack.enter_context(reference)
        if args.before is not None:
            (tmp / "before").mkdir()
            before = Reference(cores, tmp / "before", args.store, grace, args.before, secret)
            servers["before"] = stack.enter_context(before)
        servers["node"] = stack.enter_context(NodePeer(cores, "echo.js"))
        servers["picows"] = stack.enter_context(BareServer(cores, root))
        for name, server in servers.items():
            print(f"{name} server pid {server.proc.pid}", flush=True)
        yield servers


def summarize(
    per_op: dict[str, list[float]], sys_op: dict[str, list[float]], args: argparse.Namespace
) -> dict[str, Any]:
    medians = {name: statistics.median(values) for name, values in per_op.items()}
    ratios = [r / n for r, n in zip(per_op["reference"], per_op["node"], strict=True)]
    return {
        "clients": args.clients,
        "room_size": ROOM_SIZE,
        "missed_per_room": args.missed,
        "in_flight": args.in_flight,
        "rounds": args.rounds,
        # every storm checked each client's replay (seqs in order, none missing) and
        # raised otherwise: a summary exists only when all of them resumed
        "resumed": args.clients * args.rounds * len([k for k in per_op if k in STORMS]),
        "store": args.store,
        "auth": "HS256 JWT" if args.jwt else "insecure-dev",
        "presence_grace_ms": args.presence_grace_ms,
        "us_per_op": {name: round(v, 1) for name, v in medians.items()},
        "per_cpu_s": {name: round(1e6 / v) for name, v in medians.items()},
        "rounds_us": {name: [round(v, 1) for v in values] for name, values in per_op.items()},
        "sys_us_per_op": {name: round(statistics.median(v), 1) for name, v in sys_op.items()},
        "ratio_reference_to_node": round(statistics.median(ratios), 3),
        "ratio_rounds": [round(r, 3) for r in ratios],
        "before_tree": str(args.before) if args.before else None,
        "goal_met": statistics.median(ratios) <= 1.0,
        "goals": [
            {
                "goal": "server CPU per reconnect-and-resume <= Node ws per bare handshake",
                "met": None if args.quick else statistics.median(ratios) <= 1.0,
                "measured": f"{medians['reference']:.0f} vs {medians['node']:.0f} us "
                f"({statistics.median(ratios):.2f}x); bare picows {medians['picows']:.0f} us",
                "limit": "the picows handshake alone is the floor",
            }
        ],
        "versions": node_versions(),
    }


def report(summary: dict[str, Any], cores: Cores, argv: list[str]) -> str:
    us, per_s, rounds = summary["us_per_op"], summary["per_cpu_s"], summary["rounds_us"]
    system = summary["sys_us_per_op"]
    rows = [
        ("reference server, reconnect + hello/resume + replay + close", "reference"),
        (f"reference server from {summary['before_tree']}, the same", "before"),
        ("Node ws, bare handshake (connect + close)", "node"),
        ("bare picows server, bare handshake (connect + close)", "picows"),
    ]
    rows = [(label, k) for label, k in rows if k in us]
    lines = [
        "# Server CPU per reconnect-and-resume vs per bare handshake",
        "",
        f"{summary['clients']:,} clients in rooms of {summary['room_size']}, "
        f"{summary['missed_per_room']} messages missed per room and round, "
        f"{summary['in_flight']} reconnecting at a time; store {summary['store']}; "
        f"tokens {summary['auth']}; "
        f"presence grace {summary['presence_grace_ms']:,} ms; "
        f"{cores.describe()}; medians of {summary['rounds']} alternating rounds.",
        "",
        "| server, per operation | server CPU per op (us) | of it system | ops per server CPU-s "
        "| rounds (us) |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {us[k]:,.0f} | {system[k]:,.0f} | {per_s[k]:,} | "
            f"{', '.join(f'{v:.0f}' for v in rounds[k])} |"
            for label, k in rows
        ),
        "",
        f"Reference server / Node ws: **{summary['ratio_reference_to_node']:.2f}x** "
        f"(median of per-round ratios {summary['ratio_rounds']}); goal at or under 1.0: "
        f"{'met' if summary['goal_met'] else 'not met'}.",
        "",
        "```sh",
        ".venv/bin/python -m benchmarks.reconnect_cost " + " ".join(argv),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000, help="clients (rooms of 10)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--missed", type=int, default=3, help="messages missed per room")
    parser.add_argument("--in-flight", type=int, default=256, help="clients opening at once")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument(
        "--presence-grace-ms",
        type=int,
        default=600_000,
        help="the server's presence grace: long, every client is back within it; 0: "
        "every return and close is announced to the room",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="also storm a reference server run from this source tree (PYTHONPATH), in the "
        "same rounds: a before/after of a server change in one run",
    )
    parser.add_argument(
        "--jwt",
        action="store_true",
        help="the server checks HS256 JWTs (--jwt-secret) instead of --insecure-dev",
    )
    parser.add_argument("--quick", action="store_true", help="300 clients, 2 rounds")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rounds = 300, 2
    args.secret = secrets.token_hex(32) if args.jwt else None
    if args.clients % ROOM_SIZE:
        parser.error(f"--clients must be a multiple of {ROOM_SIZE}")
    cores = Cores.detect()
    with (
        exclusive_machine("reconnect cost"),
        servers_started(cores, args) as servers,
    ):
        cores.pin_self()
        per_op, sys_op = uvloop.run(measure(servers, args))
    summary = summarize(per_op, sys_op, args)
    for name in per_op:
        print(f"{name}: {summary['us_per_op'][name]:.0f} us of server CPU per op (median)")
    print(f"ratio reference / node: {summary['ratio_reference_to_node']:.2f}")
    if args.out is not None:
        args.out.write_text(report(summary, cores, argv))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
