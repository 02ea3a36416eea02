"""The setup of one (re)connection, step by step: sans-IO, one machine for every driver.

Opening a session is the same sequence whichever driver holds the socket (the native
engine's first connect and its reconnects, the Locust user's, the monitor's held
connection): the upgrade, the hello (resuming the rooms when there is something to
resume), the welcome when the protocol sends one, every room back (resumed by the hello,
or joined after the welcome), then the backlog of unacked sends. Which frames go out
when, what an answer means and when the attempt has failed is decided here, once; a
driver only waits and moves bytes:

1. ``begin(now, welcome_s, rooms_s)`` before the upgrade: a server that welcomes first
   (Action Cable, Pusher) may have its welcome in the 101's read;
2. ``upgraded(now, token)`` once the socket is open;
3. feed it what arrives: ``ready`` (a ``Ready`` event), ``rejected`` (an error frame that
   answered no send of ours), ``closed`` (the socket went), ``expire`` (the driver's wait
   ran out: a timeout is an input like any other). Each returns True when the driver
   should look again (``take`` has frames, or the step moved);
4. after each look: send ``take()``, ``check()`` (raises the ``SetupError``), and go on
   waiting until ``step`` reaches what it waits for (``Step.ROOMS``: past the welcome,
   where the native reconnect frees its handshake slot; ``Step.READY``), at most
   ``wait_s(now)``;
5. ``finish(now)``: the session is live; send the backlog it returns.

The client's memory across connections (what to resume, which rooms are still awaited,
the outbox, the recovery records) is ``ClientSession``'s; this machine only sequences one
attempt through it. Its failures are one public hierarchy (``SetupError``) whose
``cause`` is the stable name every driver counts (``rejected_<code>``, ``closed_<code>``,
``timeout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from loadtest.adapters.base import Adapter, Ready
from loadtest.client.reconnect import ClientSession


class SetupError(Exception):
    """A (re)connection's setup failed; ``cause`` is the stable name counted by cause."""

    cause: str = "setup"

    def __str__(self) -> str:
        return self.cause


class SetupRejected(SetupError):
    """The server answered the hello or a join (or a resume, beyond a refused room) with an
    error frame ``code``: a retry would be refused the same way unless the server changes."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code
        self.cause = f"rejected_{code}"


class SetupClosed(SetupError):
    """The connection closed (WebSocket close ``code``; 1006: none) before the setup ended."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
        self.cause = f"closed_{code}"


class SetupTimeout(SetupError):
    """The welcome, or the rooms after it, did not come before the step's deadline."""

    cause = "timeout"

    def __init__(self, step: Step) -> None:
        super().__init__(step)
        self.step = step


class Step(IntEnum):
    """Where one attempt is; a driver waits until ``step >=`` what it needs."""

    IDLE = 0  # no attempt in progress (before the first, between attempts, after finish)
    UPGRADE = 1  # begun: the socket is being opened (a welcome may already come)
    WELCOME = 2  # the hello is sent: awaiting the welcome
    ROOMS = 3  # welcomed: awaiting every room (resumed by the hello, or joined)
    READY = 4  # every room answered: ``finish`` it
    FAILED = 5  # ``check`` raises why


_ACTIVE = (Step.UPGRADE, Step.WELCOME, Step.ROOMS)


class SessionSetup:
    """One logical client's setup sequence; ``begin`` starts each attempt afresh.

    Kept per client, like its ``ClientSession``: the name the server gave the connection
    in its welcome (``welcome_id``) is the last one heard, and a welcome or a room's
    answer arriving between attempts still updates the session's memory.
    """

    __slots__ = (
        "_deadline_ns",
        "_early_welcome",
        "_frames",
        "_rooms_s",
        "_with_hello",
        "adapter",
        "error",
        "rooms",
        "session",
        "step",
        "user",
        "welcome_id",
    )

    def __init__(
        self, session: ClientSession, adapter: Adapter, user: str, rooms: Sequence[str]
    ) -> None:
        self.session = session
        self.adapter = adapter
        self.user = user
        self.rooms = list(rooms)  # joined after the welcome when the hello resumed none
        self.step = Step.IDLE
        self.error: SetupError | None = None
        self.welcome_id: str | None = None  # the server's name for this connection (Ready)
        self._frames: list[bytes] = []
        self._deadline_ns = 0
        self._rooms_s: float | None = None
        self._with_hello = False  # this attempt's hello resumed the rooms
        self._early_welcome = False  # the welcome came before ``upgraded``

    # -- the driver's calls ---------------------------------------------------------------

    def begin(self, now_ns: int, welcome_s: float, rooms_s: float | None = None) -> None:
        """An attempt starts (before the upgrade). ``welcome_s`` bounds the upgrade and the
        welcome from now; ``rooms_s`` the rooms from the welcome (None: the rooms too must
        be back within ``welcome_s``, as on a first connect). A reconnect gives the replays
        their own time: the server took the client back and is reading its store."""
        self.step = Step.UPGRADE
        self.error = None
        self._frames = []
        self._deadline_ns = now_ns + int(welcome_s * 1e9)
        self._rooms_s = rooms_s
        self._with_hello = False
        self._early_welcome = False

    def upgraded(self, now_ns: int, token: str | None) -> None:
        """The socket is open: the hello (resuming when there is something to resume)."""
        if self.step is not Step.UPGRADE:
            return
        frames, self._with_hello = self.session.opening_frames(self.adapter, self.user, token)
        self._frames.extend(frames)
        self.step = Step.WELCOME
        if not self.adapter.expects_welcome:
            self.session.welcomed(now_ns)  # the open socket is the welcome
            self._welcomed(now_ns)
        elif self._early_welcome:
            self._welcomed(now_ns)

    def ready(self, event: Ready, now_ns: int) -> bool:
        """A ``Ready``: the welcome (``room`` None) or a room joined or resumed at its seq."""
        session = self.session
        if event.room is None:
            self.welcome_id = event.session
            session.welcomed(now_ns)
            if self.step is Step.UPGRADE:
                self._early_welcome = True
                return False
            if self.step is Step.WELCOME:
                self._welcomed(now_ns)
                return True
            return False
        if session.room_ready(event.room, event.seq) and self.step is Step.ROOMS:
            self.step = Step.READY
            return True
        return False

    def rejected(self, code: str) -> bool:
        """An error frame that answered none of our sends: one room of a resume refused
        (the others go on: the adapter's ``refused_room_codes``), or the setup refused."""
        if self.session.room_refused(code):
            if self.step is Step.ROOMS and self.session.settled():
                self.step = Step.READY
                return True
            return False
        return self._fail(SetupRejected(code))

    def closed(self, code: int) -> bool:
        """The socket closed (``code`` 1006 when no close frame came)."""
        return self._fail(SetupClosed(code))

    def expire(self, now_ns: int) -> bool:
        """The driver's wait for the current step ran out at ``now_ns``."""
        if now_ns < self._deadline_ns:
            return False
        return self._fail(SetupTimeout(self.step))

    def wait_s(self, now_ns: int) -> float:
        """How long the driver may wait for the current step before calling ``expire``."""
        return max(0.0, (self._deadline_ns - now_ns) / 1e9)

    def take(self) -> list[bytes]:
        """Frames to send now, in order (the hello; the joins once welcomed)."""
        frames, self._frames = self._frames, []
        return frames

    def check(self) -> None:
        """Raise the ``SetupError`` the attempt failed with, if it did."""
        if self.error is not None:
            raise self.error

    @property
    def active(self) -> bool:
        """An attempt is in progress (not finished, not failed)."""
        return self.step in _ACTIVE

    @property
    def over(self) -> bool:
        """Nothing more to wait for: ready, or failed."""
        return self.step is Step.READY or self.step is Step.FAILED

    def finish(self, now_ns: int) -> list[bytes]:
        """Every room is back: the session is live. Returns the backlog to send now (the
        unacked sends of a reconnect, same request ids; nothing on a first connect)."""
        self.step = Step.IDLE
        return self.session.ready(now_ns)

    def abandon(self) -> None:
        """The driver gave the attempt up itself (its upgrade failed): later events of
        that socket no longer belong to a setup."""
        self.step = Step.IDLE
        self._frames = []

    # -- the steps ------------------------------------------------------------------------

    def _welcomed(self, now_ns: int) -> None:
        """Past the welcome: the rooms' own time starts; join unless the hello resumed."""
        if self._rooms_s is not None:
            self._deadline_ns = now_ns + int(self._rooms_s * 1e9)
        self.step = Step.ROOMS
        session = self.session
        if not self._with_hello and self.rooms:
            if self.adapter.confirms_join:  # else joined once sent: no answer will come
                session.expect_rooms(self.rooms)
            join = self.adapter.join_in
            welcome_id = self.welcome_id
            self._frames.extend(join(welcome_id, room, session.new_id()) for room in self.rooms)
        if session.settled():
            self.step = Step.READY

    def _fail(self, error: SetupError) -> bool:
        if self.step not in _ACTIVE:
            return False
        self.error = error
        self.step = Step.FAILED
        return True
