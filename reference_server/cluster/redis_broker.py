"""The Redis broker: what one worker tells every other worker, and who is online anywhere.

One pub/sub channel (``PREFIX:bus``) carries every envelope (``envelope``) to
every worker, the design of Socket.IO's Redis adapter: a worker publishes each
committed batch of a room once, and each worker fans it out to its own
subscribers. Redis pub/sub is at-most-once, so delivery does not rest on it
alone: items carry their room ``seq``, and a receiver that sees a gap (or was
disconnected) reads the missing items from the shared store (``sequencer``).

Publishing never blocks the event loop: envelopes and presence commands go into
a bounded outbox that one task sends as pipelines, in order, over one
connection. Receiving is one task on a second connection.

Presence across workers lives in Redis: ``PREFIX:online`` counts, per user, the
workers holding them (a session, or a session gone for less than the presence
grace), and ``PREFIX:held:WORKER`` is each worker's share. The worker whose
change takes a user from 0 to 1 (or 1 to 0) announces ``online`` (``offline``).
Each worker renews a lease every ``lease_ms / 3``; a worker whose lease expired
(crashed, or stopped) is reaped by the next worker to look, which announces
offline the users nobody else holds: so after a crash, users who do not come
back are shown offline within ``lease_ms``.

Outages: when a command or the subscription fails, the broker is ``down``: one
log line, ``available`` turns False (sends are refused with
``broker_unavailable``), and the subscriber reconnects with backoff. When it
is subscribed again it re-registers its users, logs one line, and asks the
worker to catch every loaded room up from the store (``Sink.reconnected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from reference_server.broker.base import BrokerError, Sink
from reference_server.cluster import envelope as env
from reference_server.config import redact_url

log = logging.getLogger("rtbench.server.broker")

CONNECT_S = 2.0
COMMAND_S = 3.0  # a pipeline slower than this means Redis is gone (or hung)
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 2.0
PIPELINE_MAX = 1000  # commands per round trip
START_TIMEOUT_S = 5.0
DOWN = (RedisError, OSError)  # what an unreachable Redis raises (TimeoutError is an OSError)

# KEYS: held set of this worker, online hash. ARGV: user. Returns the workers now holding.
HOLD = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
end
return 0
"""
# Same keys. Returns 1 when no worker holds the user any more (announce offline).
RELEASE = """
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
  if n <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    return 1
  end
end
return 0
"""
# KEYS: held, online, workers, lease. ARGV: worker id, lease ms, then the users held now.
# Makes Redis agree with this worker (after an outage, or a Redis restart that lost
# everything); returns {users now online anywhere, users now offline everywhere}.
RESYNC = """
local want, have, came, went = {}, {}, {}, {}
for i = 3, #ARGV do want[ARGV[i]] = true end
for _, u in ipairs(redis.call('SMEMBERS', KEYS[1])) do have[u] = true end
for u, _ in pairs(want) do
  if not have[u] then
    redis.call('SADD', KEYS[1], u)
    if redis.call('HINCRBY', KEYS[2], u, 1) == 1 then table.insert(came, u) end
  end
end
for u, _ in pairs(have) do
  if not want[u] then
    redis.call('SREM', KEYS[1], u)
    if redis.call('HINCRBY', KEYS[2], u, -1) <= 0 then
      redis.call('HDEL', KEYS[2], u)
      table.insert(went, u)
    end
  end
end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return {came, went}
"""
# KEYS: lease, workers. ARGV: worker id, lease ms. Returns 1 if the lease had expired
# (another worker may have reaped us: re-register everything).
LEASE = """
local renewed = redis.call('SET', KEYS[1], '1', 'PX', ARGV[2], 'XX')
redis.call('SADD', KEYS[2], ARGV[1])
if renewed then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 1
"""
# KEYS: workers, online. ARGV: prefix. Reaps every worker whose lease expired;
# returns the users no live worker holds any more.
REAP = """
local gone = {}
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':lease:' .. w) == 0 then
    local held = ARGV[1] .. ':held:' .. w
    for _, u in ipairs(redis.call('SMEMBERS', held)) do
      if redis.call('HINCRBY', KEYS[2], u, -1) <= 0 then
        redis.call('HDEL', KEYS[2], u)
        table.insert(gone, u)
      end
    end
    redis.call('DEL', held)
    redis.call('SREM', KEYS[1], w)
  end
end
return gone
"""


class _Command:
    """One entry of the outbox: a PUBLISH, or a script whose reply has a callback."""

    __slots__ = ("args", "done", "script")

    def __init__(
        self,
        script: Any,
        args: tuple[Any, ...],
        done: Callable[[Any], None] | None = None,
    ) -> None:
        self.script = script  # None: PUBLISH args[0]
        self.args = args
        self.done = done  # a PUBLISH with ``done`` is kept until Redis took it (``_unsent``)

    @property
    def kept(self) -> bool:
        """A PUBLISH someone waits for (acks): never dropped, sent again after an outage."""
        return self.script is None and self.done is not None


class RedisBroker:
    """Cross-worker fan-out and presence over one Redis (or a Sentinel-managed primary)."""

    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        prefix: str = "rtbench",
        lease_ms: int = 10000,
        outbox_max: int = 100000,
    ) -> None:
        self.url = redact_url(url)
        self.prefix = prefix
        self.lease_ms = lease_ms
        self.outbox_max = outbox_max
        self.wid = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.channel = f"{prefix}:bus"
        self.available = False
        self._keys_online = f"{prefix}:online"
        self._keys_workers = f"{prefix}:workers"
        self._keys_held = f"{prefix}:held:{self.wid}"
        self._keys_lease = f"{prefix}:lease:{self.wid}"
        self._client = self._connect(url, "pub", COMMAND_S)
        self._subscriber = self._connect(url, "sub", None)  # waits for messages: no timeout
        self._hold = self._client.register_script(HOLD)
        self._release = self._client.register_script(RELEASE)
        self._resync_script = self._client.register_script(RESYNC)
        self._lease = self._client.register_script(LEASE)
        self._reap = self._client.register_script(REAP)
        self._sink: Sink | None = None
        self._outbox: deque[_Command] = deque()
        self._unsent: deque[_Command] = deque()  # kept PUBLISHes that met an outage
        self._wake = asyncio.Event()
        self._broken = False  # the publisher failed: the subscriber must start over
        self._tasks: set[asyncio.Task[Any]] = set()
        self._up_once = asyncio.Event()
        self.published = self.received = self.dropped = self.outages = 0
        self.last_error: str | None = None

    def _connect(self, url: str, role: str, timeout: float | None) -> aioredis.Redis:
        """A client named for CLIENT LIST; a failure is an outage handled here, not retried."""
        return aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_S,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=f"rtbench:{self.wid}:{role}",
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sink: Sink) -> None:
        """Connect and subscribe, or raise OSError with one line (the server won't start)."""
        self._sink = sink
        try:
            await self._client.ping()
        except DOWN as exc:
            await self._close_clients()
            raise BrokerError(f"cannot connect to broker {self.url}: {_describe(exc)}") from None
        for coro, name in (
            (self._publish_forever(), "rtbench-broker-publish"),
            (self._subscribe_forever(), "rtbench-broker-subscribe"),
            (self._lease_forever(), "rtbench-broker-lease"),
        ):
            self._spawn(coro, name)
        try:
            await asyncio.wait_for(self._up_once.wait(), START_TIMEOUT_S)
        except TimeoutError:
            await self.close()
            raise BrokerError(
                f"cannot subscribe to broker {self.url}: {self.last_error or 'timed out'}"
            ) from None

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("rtbench: broker task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Stop; the lease is left to expire, so this worker's users go offline only if
        they do not come back on another worker within ``lease_ms`` (as after a crash)."""
        self.available = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self._client, self._subscriber):
            with contextlib.suppress(*DOWN):
                await client.aclose()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.available else "down",
            "kind": self.name,
            "url": self.url,
            "worker": self.wid,
            "published": self.published,
            "received": self.received,
            "dropped": self.dropped,
            "unsent": len(self._unsent),  # committed items (and their acks) awaiting Redis
            "outbox": len(self._outbox),
            "outages": self.outages,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ state

    def _went_down(self, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else _describe(exc)
        self.last_error = reason
        self._broken = True
        if not self.available:
            return
        self.available = False
        self.outages += 1
        self._keep_or_drop(self._outbox)
        self._outbox.clear()
        log.error(
            "rtbench: broker %s unavailable (%s): sends get broker_unavailable until it returns",
            self.url,
            reason,
        )

    async def _came_back(self) -> None:
        """Subscribed again: re-register this worker's users, then open for sends."""
        assert self._sink is not None
        came, went = await self._resync()
        recovered = self._up_once.is_set()
        self._broken = False
        self.available = True
        self._up_once.set()
        self._outbox.extendleft(reversed(self._unsent))  # first, in their order
        self._unsent.clear()
        self._wake.set()
        if recovered:
            log.warning("rtbench: broker %s is back", self.url)
        for user in came:
            self._announce(user, "online")
        for user in went:
            self._announce(user, "offline")
        if recovered:
            self._sink.reconnected()

    async def _resync(self) -> tuple[list[str], list[str]]:
        assert self._sink is not None
        users = self._sink.held_users()
        keys = [self._keys_held, self._keys_online, self._keys_workers, self._keys_lease]
        came, went = await self._resync_script(
            keys=keys, args=[self.wid, self.lease_ms, *users], client=self._client
        )
        return [u.decode() for u in came], [u.decode() for u in went]

    # ------------------------------------------------------------------ publishing

    def _enqueue(self, command: _Command) -> None:
        if not self.available or len(self._outbox) >= self.outbox_max:
            self._keep_or_drop((command,))
            return
        self._outbox.append(command)
        self._wake.set()

    def _keep_or_drop(self, commands: Iterable[_Command]) -> None:
        """What cannot be sent now: kept PUBLISHes wait for the broker's return (their
        acks with them; the store already has the items, and the sends that would add
        more are refused meanwhile); the rest is dropped, as receivers repair gaps from
        the store and presence resyncs."""
        for command in commands:
            if command.kept:
                self._unsent.append(command)
            else:
                self.dropped += 1

    def _send(self, envelope: env.Envelope, done: Callable[[Any], None] | None = None) -> None:
        self._enqueue(_Command(None, (env.encode(envelope),), done))

    async def _publish_forever(self) -> None:
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), PIPELINE_MAX))]
            pipe = self._client.pipeline(transaction=False)
            for command in batch:
                if command.script is None:
                    pipe.publish(self.channel, command.args[0])
                else:
                    keys, args = command.args
                    pipe.scripts.add(command.script)  # loaded first if Redis lost it
                    pipe.evalsha(command.script.sha, len(keys), *keys, *args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except DOWN as exc:
                self._keep_or_drop(batch)  # Redis may or may not have them: sent again
                self._went_down(exc)
                continue
            for command, result in zip(batch, results, strict=True):
                if command.script is None:
                    self.published += 1
                    if command.done is not None:
                        command.done(result)
                elif isinstance(result, Exception):
                    log.error("rtbench: broker command failed: %s", _describe(result))
                elif command.done is not None:
                    command.done(result)

    def publish(
        self,
        room: str,
        items: list[tuple[int, bytes]],
        published: Callable[[], None] | None = None,
        again: bool = False,
    ) -> None:
        """A room's newly durable items, to every other worker (never blocks);
        ``published`` once Redis took them (``Broker.publish``)."""
        done = None if published is None else (lambda _result: published())
        self._send(env.Items(self.wid, room, items, again), done)

    def share_frame(
        self, room: str, frame: bytes, exclude_user: str | None = None, chatty: bool = False
    ) -> None:
        self._send(env.RoomFrame(self.wid, room, frame, exclude_user, chatty))

    def share_receipt(self, room: str, user: str, seq: int, frame: bytes) -> None:
        self._send(env.Receipt(self.wid, room, user, seq, frame))

    def share_members(self, room: str, added: list[str]) -> None:
        self._send(env.Members(self.wid, room, added))

    def share_left(self, room: str, user: str) -> None:
        self._send(env.Left(self.wid, room, user))

    # ------------------------------------------------------------------ presence

    def _announce(self, user: str, state: str) -> None:
        assert self._sink is not None
        self._sink.presence(user, state)
        self._send(env.Presence(self.wid, user, state))

    def hold(self, user: str) -> None:
        """The user's first session here: online everywhere if nobody held them yet."""
        self._presence_command(self._hold, user, "online")

    def release(self, user: str) -> None:
        """The user stayed away from this worker past the grace: offline if nowhere else."""
        self._presence_command(self._release, user, "offline")

    def _presence_command(self, script: Any, user: str, state: str) -> None:
        """Run HOLD or RELEASE; a reply of 1 means this worker made the change: announce it."""

        def done(changed: int) -> None:
            if changed == 1:
                self._announce(user, state)

        keys = [self._keys_held, self._keys_online]
        self._enqueue(_Command(script, (keys, [user]), done))

    async def online(self, users: Iterable[str]) -> set[str] | None:
        """Which of ``users`` some worker holds; None when Redis cannot say (use local)."""
        wanted = list(users)
        if not wanted or not self.available:
            return None
        try:
            counts = await self._client.hmget(self._keys_online, wanted)
        except DOWN:
            return None
        return {u for u, n in zip(wanted, counts, strict=True) if n is not None and int(n) > 0}

    async def _lease_forever(self) -> None:
        period = self.lease_ms / 3000
        while True:
            await asyncio.sleep(period)
            if not self.available:
                continue
            self._enqueue(
                _Command(
                    self._lease,
                    ([self._keys_lease, self._keys_workers], [self.wid, self.lease_ms]),
                    self._lease_done,
                )
            )
            self._enqueue(
                _Command(
                    self._reap,
                    ([self._keys_workers, self._keys_online], [self.prefix]),
                    self._reaped,
                )
            )

    def _lease_done(self, expired: int) -> None:
        if expired == 1:  # we were taken for dead (a long stall): register our users again
            log.warning("rtbench: broker lease of worker %s had expired; re-registering", self.wid)
            self._spawn(self._resync_announce(), "rtbench-broker-resync")

    async def _resync_announce(self) -> None:
        try:
            came, went = await self._resync()
        except DOWN as exc:
            self._went_down(exc)
            return
        for user in came:
            self._announce(user, "online")
        for user in went:
            self._announce(user, "offline")

    def _reaped(self, gone: list[bytes]) -> None:
        for user in gone:
            self._announce(user.decode(), "offline")

    # ------------------------------------------------------------------ receiving

    async def _subscribe_forever(self) -> None:
        delay = BACKOFF_MIN_S
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:  # wait for the confirmation: from here on nothing is missed
                    message = await pubsub.get_message(timeout=COMMAND_S)
                    if message is None:
                        raise TimeoutError("no subscribe confirmation")
                    if message["type"] == "subscribe":
                        break
                await self._came_back()
                delay = BACKOFF_MIN_S
                while not self._broken:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._receive(message["data"])
                raise ConnectionError("the publishing connection failed")
            except DOWN as exc:
                self._went_down(exc)
            finally:
                with contextlib.suppress(*DOWN):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _receive(self, data: bytes) -> None:
        try:
            message = env.decode(data)
        except ValueError:
            log.error("rtbench: broker: undecodable envelope of %d bytes ignored", len(data))
            return
        if message.origin == self.wid:
            return  # our own, echoed by the channel
        self.received += 1
        sink = self._sink
        assert sink is not None
        try:
            kind = type(message)
            if type(message) is env.Items:
                sink.items(message.room, message.items, message.again)
            elif type(message) is env.RoomFrame:
                sink.room_frame(
                    message.room,
                    message.frame,
                    message.exclude_user,
                    message.chatty,
                )
            elif type(message) is env.Receipt:
                sink.receipt(message.room, message.user, message.seq, message.frame)
            elif type(message) is env.Presence:
                sink.presence(message.user, message.state)
            elif type(message) is env.Members:
                sink.members(message.room, message.added)
            elif type(message) is env.Left:
                sink.left(message.room, message.user)
        except Exception:  # a bug in applying one envelope must not stop the feed
            log.exception("rtbench: broker: applying a %s envelope failed", kind.__name__)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
