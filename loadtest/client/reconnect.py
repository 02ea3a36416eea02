"""One logical client across its connections: resume, outbox, recovery timing. Sans-IO.

The native engine (picows on uvloop), the Locust users (gevent) and the monitor
(websockets) each own their sockets; what a client must *remember* to survive losing
one is the same for all three and lives here:

- **Request ids unique per logical client, across reconnects.** Adapters derive the
  idempotency key of a send from its request id (the reference protocol's ``cid``), and
  servers deduplicate on (user, key): a client that restarted its ids at 1 on every
  connection would have its new sends swallowed as retries of old ones. A long-lived
  client (the monitor) starts its ids from the clock so restarts of the process are
  distinct too.
- **The outbox.** Every send stays here until acked or refused. After a reconnect the
  client resumes its rooms first (a send into a room it is not back in would be
  refused) and then writes the outbox again, in order, *with the same request ids*: a
  send the server had stored is acked again as a duplicate and not delivered twice; one
  it never got is stored now. Sends made while the connection is down wait here too.
  That is how "nothing acked is lost, nothing is duplicated" works end to end.
- **Resume and dedupe by seq** (``loadtest.session.SessionState``): the hello names every
  room with the seq to replay after; replayed items already seen are dropped.
- **Recovery timing.** Per loss: when it was lost, when the session was back (welcome),
  when every room had resumed with its replay, attempts, items replayed, and whether
  every missed item came back. These records are the recovery target's samples.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from msgspec import Struct

from loadtest.adapters.base import Adapter, Feature
from loadtest.client.policy import Backoff, ReconnectPolicy
from loadtest.session import SeqOrder, SessionState
from rtbench.bounded import BoundedDict


class Phase(IntEnum):
    NEW = 0  # never connected
    SETUP = 1  # first connection: hello and joins in progress
    LIVE = 2  # connected, every room subscribed
    LOST = 3  # connection lost: waiting to retry, or an attempt is in progress
    RESUMING = 4  # reconnected (welcome received), rooms resuming
    GONE = 5  # gave up, or told not to come back


class Recovery(Struct, array_like=True, gc=False):
    """One loss and what followed, on the driver's clock (ns)."""

    lost_ns: int
    cause: str  # "close_1012", "reset", "heartbeat", ... (the driver's words)
    reconnected_ns: int = 0  # the session was back (welcome); 0: never
    resumed_ns: int = 0  # every room resumed with its replay; 0: never
    attempts: int = 0
    attempt_ns: int = 0  # when the last (the successful) attempt started
    replayed: int = 0  # missed items received in the replays
    complete: bool = True  # every item missed while away arrived


class ClientSession(SessionState):
    """Everything a reconnecting client remembers between its connections."""

    __slots__ = (
        "awaiting",
        "backoff",
        "current",
        "dropped",
        "next_id",
        "outbox",
        "phase",
        "policy",
        "records",
        "refusals",
        "refused",
        "resuming",
        "retried",
    )

    def __init__(
        self,
        policy: ReconnectPolicy | None = None,
        rng: random.Random | None = None,
        first_id: int = 0,
    ) -> None:
        super().__init__()
        self.policy = policy or ReconnectPolicy()
        self.backoff = Backoff(self.policy, rng)
        self.next_id = first_id
        # req id -> (payload, driver's tag), oldest first, the oldest given up past the
        # policy's limit (a BoundedDict: see rtbench/bounded.py for why not a dict)
        self.outbox: BoundedDict[Any, tuple[bytes, Any]] = BoundedDict(self.policy.outbox)
        self.phase = Phase.NEW
        self.current: Recovery | None = None
        self.records: list[Recovery] = []
        self.awaiting: set[str] = set()  # rooms whose joined/resumed answer is awaited
        self.refused = 0  # rooms of this resume the server refused
        self.refusals: frozenset[str] = frozenset()  # the adapter's refused_room_codes
        self.resuming = False  # the hello of this connection resumed rooms
        self.dropped = 0  # sends given up because the outbox was full
        self.retried = 0  # sends written again after a reconnect

    # -- ids and the outbox -------------------------------------------------------------

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def track(self, req_id: Any, payload: bytes, tag: Any = None) -> tuple[Any, Any] | None:
        """Keep a send until it is settled; returns the (id, tag) evicted past the limit."""
        forgotten = self.outbox.put(req_id, (payload, tag))
        if forgotten is None:
            return None
        self.dropped += 1
        oldest, (_, old_tag) = forgotten
        return oldest, old_tag

    def settle(self, req_id: Any) -> Any:
        """An ack or a refusal of ``req_id``: forget it; returns its tag (None: unknown)."""
        found = self.outbox.pop(req_id, None)
        return None if found is None else found[1]

    def backlog(self) -> list[bytes]:
        """Every unsettled send, oldest first, to write after a resume (same ids)."""
        return [payload for payload, _ in self.outbox.values()]

    # -- connection lifecycle ---------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.phase is Phase.LIVE

    @property
    def recovering(self) -> bool:
        """Lost and coming back: sends made now wait in the outbox."""
        return self.phase is Phase.LOST or self.phase is Phase.RESUMING

    def lost(self, now_ns: int, cause: str) -> bool:
        """The connection went away; True when the driver should reconnect.

        A loss while resuming (an attempt that failed half way) belongs to the recovery
        already being measured; a loss during the very first setup is a failed
        connection, not a recovery, and is the driver's to count.
        """
        self.awaiting.clear()
        if self.phase is Phase.LIVE or self.phase is Phase.RESUMING:
            if self.current is None:
                self.current = Recovery(now_ns, cause)
            self.phase = Phase.LOST
        return self.phase is Phase.LOST

    def retry_delay_s(self) -> float:
        return self.backoff.next_delay_s()

    def attempt(self, now_ns: int) -> bool:
        """An attempt starts; False when the policy says to give up."""
        current = self.current
        if current is not None:
            give_up = self.policy.give_up_s
            if give_up is not None and now_ns - current.lost_ns > give_up * 1e9:
                self.give_up()
                return False
            current.attempts += 1
            current.attempt_ns = now_ns
        return True

    def give_up(self) -> None:
        """Stop: the recovery in progress (if any) is recorded as never completed."""
        if self.current is not None:
            self.records.append(self.current)
            self.current = None
        self.phase = Phase.GONE

    def opening_frames(
        self, adapter: Adapter, user: str, token: str | None
    ) -> tuple[list[bytes], bool]:
        """The frames that open (or reopen) the session; (frames, rooms_come_with_hello).

        When the adapter resumes and there are rooms to resume, the hello names them and
        each answers by itself; otherwise the driver joins ``rooms`` after the welcome.
        """
        self.refused = 0
        resume = self.resume() if self.phase is not Phase.NEW else {}
        if self.phase is Phase.NEW:
            self.phase = Phase.SETUP
        if resume and Feature.RESUME in adapter.features:
            self.resuming = True
            self.refusals = adapter.refused_room_codes
            self.awaiting = set(resume)
            return adapter.resume(user, token, resume), True
        self.resuming = False
        self.awaiting = set()
        return adapter.open(user, token), False

    def expect_rooms(self, rooms: list[str] | set[str]) -> None:
        """The driver is joining these rooms (first setup, or a protocol without resume)."""
        self.awaiting.update(rooms)

    def welcomed(self, now_ns: int) -> None:
        """The server accepted the session again (welcome, or the socket for a protocol
        without one)."""
        current = self.current
        if current is not None and not current.reconnected_ns:
            current.reconnected_ns = now_ns
        if self.phase is Phase.LOST:
            self.phase = Phase.RESUMING

    def room_ready(self, room: str, seq: int) -> bool:
        """A room answered (joined / resumed at ``seq``); True when every room has."""
        if self.resuming and room in self.awaiting:
            if not self.complete(room, seq) and self.current is not None:
                self.current.complete = False
            self.rooms.add(room)
            if seq > self.last_seq.get(room, 0):
                self.last_seq[room] = seq  # past a gap the server could not replay
        else:
            if self.current is not None and room in self.rooms and not self.complete(room, seq):
                self.current.complete = False  # a rejoin without replay skipped items
            self.joined(room, seq)
        self.awaiting.discard(room)
        return self.settled()

    def room_refused(self, code: str) -> bool:
        """An error while rooms resume: True when it is one room's refusal (the server
        still resumes the others, so the resume goes on; the adapter's
        ``refused_room_codes`` say which), False for any other error."""
        if not self.resuming or code not in self.refusals or not self.awaiting:
            return False
        self.refused += 1
        return True

    def settled(self) -> bool:
        """Every room of this (re)connection has answered, joined or refused."""
        return len(self.awaiting) <= self.refused

    def item(self, room: str, seq: int) -> SeqOrder:
        """A stored item arrived: classify it (OLD: drop it as a duplicate)."""
        order = self.observe(room, seq)
        if order is not SeqOrder.OLD and self.current is not None and self.phase is Phase.RESUMING:
            self.current.replayed += 1
        return order

    def ready(self, now_ns: int) -> list[bytes]:
        """Every room is back: the session is live. Returns the backlog to write now."""
        current = self.current
        if current is not None:
            if not current.reconnected_ns:
                current.reconnected_ns = now_ns
            current.resumed_ns = now_ns
            self.records.append(current)
            self.current = None
        recovering = self.phase is not Phase.SETUP
        self.phase = Phase.LIVE
        self.awaiting.clear()
        self.backoff.reset()
        if not recovering or not self.outbox:
            return []
        backlog = self.backlog()
        self.retried += len(backlog)
        return backlog

    def expected_rooms(self) -> Mapping[str, int]:
        """What the next resume would ask for (for logs and tests)."""
        return self.resume()
