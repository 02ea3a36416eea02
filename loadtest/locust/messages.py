"""What the Locust master and its workers tell each other about a realtime run.

Locust carries these as custom messages (``runner.send_message`` /
``register_message``); in a single-process run they are plain calls. Structs travel
msgpack-encoded (msgspec) inside the message's data, and the per-second and final
figures are every driver's ``Tick`` and ``Final`` (``loadtest.run.report``), so both
engines merge their figures with one piece of code (``loadtest.run.outcome.merge``).

The run moves like the native engine's: users claim connection indices of their role
from the master, connect and join, report ready; when every connection is up (or the
connect budget is spent) the master sends the go with the bitmap of live connections,
so each message's expected recipients are known exactly; after the send window the
master drains until every expected delivery arrived, then asks for the finals.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from loadtest.plan import Plan
from loadtest.run.report import Final, Tick
from loadtest.scenarios import Kind, Scenario

# worker -> master
CLAIM = "rtbench_claim"  # {"role": str, "n": int}: connection indices wanted
READY = "rtbench_ready"  # {"tag", "ready": [index], "failed": [index]}
DONE = "rtbench_done"  # {"tag", "held": int}: every sender of this process is done
TICK = "rtbench_tick"  # {"tag", "tick": Tick}: one second of this process
COUNTS = "rtbench_counts"  # {"tag", "counters": {...}}: cumulative, often while draining
FINAL = "rtbench_final"  # {"tag", "final": Final}: after every connection closed
# master -> worker
GRANT = "rtbench_grant"  # {"run": RunSpec, "role": str, "indices": [index]}
GO = "rtbench_go"  # {"tag", "start_ns": int, "live": bytes}
FINISH = "rtbench_finish"  # {"tag"}: stop, close every connection, send the final

TO_MASTER = (CLAIM, READY, DONE, TICK, COUNTS, FINAL)
TO_WORKERS = (GRANT, GO, FINISH)

REPORT_KEY = "rtbench"
"""Key of the realtime snapshot a worker adds to Locust's own stats report."""


class RunSpec(Struct, forbid_unknown_fields=False):
    """What a worker needs to know to take part in a run."""

    tag: str
    scenario: Scenario
    url: str
    t0_ns: int  # run start, wall clock (time.time_ns) of the master
    live: bool = False  # live export on the master: ticks carry every histogram


def encode(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


def decode_run(raw: bytes) -> RunSpec:
    return msgspec.msgpack.decode(raw, type=RunSpec)


def decode_tick(raw: bytes) -> Tick:
    return msgspec.msgpack.decode(raw, type=Tick)


def decode_final(raw: bytes) -> Final:
    return msgspec.msgpack.decode(raw, type=Final)


# -- roles: which connection indices of the plan a user class takes --------------------------

CHAT = "chat"
SUBSCRIBER = "subscriber"
PUBLISHER = "publisher"
ROUND_TRIP = "rtt"
HOLDER = "holder"


def roles(plan: Plan) -> dict[str, range]:
    """Connection indices per role: the same topology as the native engine's plan."""
    kind = plan.kind
    if kind in (Kind.CHAT, Kind.SOAK):
        return {CHAT: range(plan.subscribers)}
    if kind is Kind.FANOUT:
        return {
            SUBSCRIBER: range(plan.subscribers),
            PUBLISHER: range(plan.subscribers, plan.connections),
        }
    if kind is Kind.RTT:
        return {ROUND_TRIP: range(plan.connections)}
    return {HOLDER: range(plan.connections)}
