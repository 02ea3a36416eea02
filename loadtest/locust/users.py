"""Locust user classes for realtime WebSocket load, one per role of the scenario's plan.

A user is one connection of the native engine's plan (``loadtest.plan``): it claims its
connection index from the master, connects and joins its rooms, then sends on the
open-loop schedule the scenario gives its role. Which classes run, and how many of each,
comes from the scenario (``classes_for``) through the load shape, so ``--scenario chat
-u 500`` means the same 500 connections, rooms and DM pairs as ``rtbench run chat
--users 500``. Everything a user measures goes into Locust's statistics and into the
realtime figures behind the Realtime SLO tab and the exit code.
"""

from __future__ import annotations

from typing import ClassVar

import gevent
from locust import User, constant, task

from loadtest.locust import messages
from loadtest.locust.connection import Conn
from loadtest.locust.node import NodeRun
from loadtest.locust.plugin import node_of
from loadtest.scenarios import Kind, Scenario


class RealtimeUser(User):
    """One realtime connection; subclasses only name their role in the plan."""

    abstract = True
    role: ClassVar[str] = ""
    wait_time = constant(0)

    def on_start(self) -> None:
        self.conn: Conn | None = None
        self.node_run: NodeRun | None = None
        claimed = node_of(self.environment).claim(self.role)
        if claimed is None:  # the plan has no more connections of this role
            return
        self.node_run, index = claimed
        self.conn = self.node_run.connect(index)

    @task
    def realtime(self) -> None:
        if self.conn is not None and self.node_run is not None:
            self.node_run.live(self.conn)
        while True:  # the run is over for this user: hold until Locust stops it
            gevent.sleep(3600)

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.begin_close()


class ChatUser(RealtimeUser):
    """A chat user (chat and soak): member of a room of ``--room-size`` and of a DM pair;
    each send goes to the room, or with ``--dm-share`` to the partner, with typing
    indicators and read receipts mixed in (``--typing-share``, ``--receipt-share``)."""

    role = messages.CHAT


class DirectMessageUser(RealtimeUser):
    """A chat user whose every send is a direct message to its pair partner
    (``--dm-share 1``); still a room member, so room traffic reaches it too."""

    role = messages.CHAT


class FanoutSubscriber(RealtimeUser):
    """A live-update subscriber (fanout): joins its room of ``--room-size`` and receives
    every broadcast event."""

    role = messages.SUBSCRIBER


class BroadcastPublisher(RealtimeUser):
    """A publisher (fanout): ``--publishers`` per room, broadcasting events at ``--rate``."""

    role = messages.PUBLISHER


class RoundTripUser(RealtimeUser):
    """Request/response round trips (rtt): a ping the server answers (or any echo)."""

    role = messages.ROUND_TRIP


class ConnectionHolder(RealtimeUser):
    """Opens a connection and holds it (connect), answering heartbeat probes."""

    role = messages.HOLDER


def classes_for(scenario: Scenario) -> dict[type[RealtimeUser], int]:
    """The user classes a scenario runs and how many of each (their ``fixed_count``)."""
    from loadtest.plan import Plan

    plan = Plan(scenario, "")
    counts = {role: len(indices) for role, indices in messages.roles(plan).items()}
    chat = DirectMessageUser if (scenario.dm_share or 0) >= 1 else ChatUser
    by_role: dict[str, type[RealtimeUser]] = {
        messages.CHAT: chat,
        messages.SUBSCRIBER: FanoutSubscriber,
        messages.PUBLISHER: BroadcastPublisher,
        messages.ROUND_TRIP: RoundTripUser,
        messages.HOLDER: ConnectionHolder,
    }
    return {by_role[role]: n for role, n in counts.items() if n > 0}


ALL_USERS: tuple[type[RealtimeUser], ...] = (
    ChatUser,
    DirectMessageUser,
    FanoutSubscriber,
    BroadcastPublisher,
    RoundTripUser,
    ConnectionHolder,
)

__all__ = [
    "ALL_USERS",
    "BroadcastPublisher",
    "ChatUser",
    "ConnectionHolder",
    "DirectMessageUser",
    "FanoutSubscriber",
    "Kind",
    "RealtimeUser",
    "RoundTripUser",
    "classes_for",
]
