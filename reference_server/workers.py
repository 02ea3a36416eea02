"""``rtbench serve --workers N``: N worker processes on one port, and their supervisor.

One Python process runs one event loop on one core and may hold at most 20,000
file descriptors here, so a machine's worth of connections needs several. The
supervisor creates N listening sockets on one port with ``SO_REUSEPORT`` (the
kernel spreads new connections over them by a hash of the addresses) and hands
one to each worker. It keeps its own copy of every socket: when a worker dies,
its socket stays open, the connections the kernel sends there wait in its
listen queue, and the restarted worker picks them up. Nothing is refused and
the port can never be lost, even with ``--port 0``, where the supervisor picks
the port once before any worker starts.

The supervisor checks the store and the broker before starting anybody (so a
wrong URL is one line, not N), migrates the store's schema once, starts the
workers, waits until every one listens, and only then prints the listening line,
once, with the real port. It restarts a worker that dies (with a growing delay
if it keeps dying), and on SIGTERM/SIGINT it tells every worker to drain (each
closes its clients with 1012) and exits when they are done. Workers die with it
if it is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from reference_server.cluster.stats import SlotFile, SupervisorState, WorkerState
from reference_server.config import ServerConfig

log = logging.getLogger("rtbench.server")

READY = b"rtbench-worker-ready"
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0  # beyond the drain timeout, before a worker that won't stop is killed
STEADY_S = 10.0  # a worker that ran this long before dying is restarted at once
BACKOFF_MAX_S = 10.0
ENV_INDEX, ENV_COUNT, ENV_FD, ENV_STATS = (
    "RTBENCH_WORKER_INDEX",
    "RTBENCH_WORKER_COUNT",
    "RTBENCH_WORKER_FD",
    "RTBENCH_WORKER_STATS",
)


class SupervisorError(Exception):
    """The workers cannot be started; one line for the user."""


@dataclass
class Worker:
    index: int
    sock: socket.socket
    proc: asyncio.subprocess.Process | None = None
    state: str = "starting"
    restarts: int = 0
    started: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0  # deaths in a row that came soon after a start


def listening_sockets(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` sockets listening on one port with SO_REUSEPORT (port 0: pick one first)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            address = (address[0], sock.getsockname()[1], *address[2:])  # the port picked
            sock.listen(backlog)  # each goes to one worker only (pass_fds)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Starts, watches, restarts and drains the workers of one machine."""

    def __init__(self, config: ServerConfig, workers: int, store_url: str) -> None:
        self.config = config
        self.count = workers
        self.store_url = store_url  # as shown (no password)
        self.workers: list[Worker] = []
        self.stopping = asyncio.Event()
        self.serving = False  # every worker was ready once: from then on, deaths are restarts
        self.started = time.time()
        stats_dir = SlotFile.default_dir()
        self.stats_path = stats_dir / f"rtbench-{os.getpid()}-{secrets.token_hex(3)}.stats"
        self.slots: SlotFile | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: set[asyncio.Task[None]] = set()  # one per worker process: its stdout
        self._config_json = msgspec.json.encode(config)

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit code (0: every worker drained)."""
        listen = self.config.listen
        try:
            sockets = listening_sockets(listen.host, listen.port, self.count, listen.backlog)
        except OSError as exc:
            raise SupervisorError(f"cannot listen on {listen.host}:{listen.port}: {exc}") from None
        port = sockets[0].getsockname()[1]
        self.workers = [Worker(i, sock) for i, sock in enumerate(sockets)]
        self.slots = SlotFile(self.stats_path, self.count, create=True)
        await preflight(self.config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            for worker in self.workers:
                self._tasks.append(loop.create_task(self._keep(worker)))
            await self._wait_ready()
            self.serving = True
            self._announce(port)
            await self.stopping.wait()
            log.info("rtbench: draining %d workers", self.count)
            return await self._stop_all()
        finally:
            for task in (*self._tasks, *self._readers):
                task.cancel()
            await asyncio.gather(*self._tasks, *self._readers, return_exceptions=True)
            for worker in self.workers:
                if worker.proc is not None and worker.proc.returncode is None:
                    worker.proc.kill()
                    await worker.proc.wait()
                worker.sock.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self.slots.close()
            with contextlib.suppress(OSError):
                self.stats_path.unlink()

    async def _wait_ready(self) -> None:
        waits = [asyncio.ensure_future(w.ready.wait()) for w in self.workers]
        stop = asyncio.ensure_future(self.stopping.wait())
        failed = asyncio.ensure_future(self._first_failure())
        try:
            pending: list[asyncio.Future[Any]] = [asyncio.gather(*waits), stop, failed]
            done, _ = await asyncio.wait(
                pending,
                timeout=START_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for fut in (*waits, stop, failed):
                fut.cancel()
        if failed in done and failed.exception() is None:
            raise SupervisorError(failed.result())
        if not done:
            raise SupervisorError(f"the workers did not start within {START_TIMEOUT_S:.0f} s")

    async def _first_failure(self) -> str:
        """Resolves with a message if a worker dies before every worker is ready."""
        while True:
            for worker in self.workers:
                proc = worker.proc
                if proc is not None and proc.returncode is not None and not worker.ready.is_set():
                    return (
                        f"worker {worker.index} {_exit_reason(proc.returncode)} before it was "
                        "ready (its error is above)"
                    )
            await asyncio.sleep(0.05)

    def _announce(self, port: int) -> None:
        listen = self.config.listen
        pids = ", ".join(str(w.proc.pid) for w in self.workers if w.proc is not None)
        broker = self.config.cluster.broker or "none"
        log.info("rtbench: %d workers (pids %s), broker %s", self.count, pids, broker)
        from reference_server.server import announce

        announce(listen.host, port, listen.transport, self.store_url)

    # ------------------------------------------------------------------ one worker

    async def _keep(self, worker: Worker) -> None:
        """Start the worker, and start it again whenever it dies (until stopping)."""
        while not self.stopping.is_set():
            try:
                await self._spawn(worker)
            except OSError as exc:  # fork or exec failed (out of memory, process limit)
                log.error("rtbench: cannot start worker %d: %s", worker.index, exc)
                worker.started, code = time.monotonic(), -1
            else:
                assert worker.proc is not None
                code = await worker.proc.wait()
            if self.stopping.is_set() or not self.serving:
                break  # before every worker was ready a death is fatal: run() reports it
            ran = time.monotonic() - worker.started
            worker.failures = 0 if ran >= STEADY_S else worker.failures + 1
            delay = 0.0 if worker.failures == 0 else min(0.5 * 2 ** (worker.failures - 1), 10)
            worker.restarts += 1
            worker.state = "restarting"
            worker.ready.clear()
            self._publish_state()
            log.error(
                "rtbench: worker %d (pid %d) %s after %.1f s; restarting it%s",
                worker.index,
                worker.proc.pid if worker.proc is not None else 0,
                _exit_reason(code),
                ran,
                f" in {delay:.1f} s" if delay else "",
            )
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)

    async def _spawn(self, worker: Worker) -> None:
        env = {
            **os.environ,
            ENV_INDEX: str(worker.index),
            ENV_COUNT: str(self.count),
            ENV_FD: str(worker.sock.fileno()),
            ENV_STATS: str(self.stats_path),
        }
        worker.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reference_server.workers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(worker.sock.fileno(),),
            env=env,
        )
        worker.started = time.monotonic()
        worker.state = "starting"
        self._publish_state()
        assert worker.proc.stdin is not None and worker.proc.stdout is not None
        worker.proc.stdin.write(self._config_json)  # secrets stay out of the environment
        with contextlib.suppress(ConnectionError):
            await worker.proc.stdin.drain()
        worker.proc.stdin.close()
        reader = asyncio.get_running_loop().create_task(self._read_stdout(worker, worker.proc))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    async def _read_stdout(self, worker: Worker, proc: asyncio.subprocess.Process) -> None:
        """The ready line; anything else a worker prints on stdout is passed through."""
        assert proc.stdout is not None
        async for line in proc.stdout:
            if line.strip() == READY:
                worker.state = "running"
                worker.ready.set()
                self._publish_state()
            else:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

    def _publish_state(self) -> None:
        if self.slots is None:
            return
        states = [
            WorkerState(
                index=w.index,
                pid=w.proc.pid if w.proc is not None else 0,
                state=w.state,
                restarts=w.restarts,
                since=time.time(),
            )
            for w in self.workers
        ]
        self.slots.write_supervisor(SupervisorState(os.getpid(), self.started, states))

    # ------------------------------------------------------------------ stop

    async def _stop_all(self) -> int:
        """SIGTERM every worker (each drains: close 1012), then wait; kill stragglers."""
        for task in self._tasks:
            task.cancel()  # no restarts from here on
        await asyncio.gather(*self._tasks, return_exceptions=True)
        procs = [w.proc for w in self.workers if w.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = self.config.timing.drain_timeout_ms / 1000 + STOP_GRACE_S
        try:
            codes = await asyncio.wait_for(
                asyncio.gather(*(proc.wait() for proc in procs)), deadline
            )
        except TimeoutError:
            log.error("rtbench: workers still running %.0f s after SIGTERM: killed", deadline)
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            codes = await asyncio.gather(*(proc.wait() for proc in procs))
        for worker in self.workers:
            worker.state = "stopped"
        self._publish_state()
        log.info("rtbench: stopped")
        # a worker still starting when SIGTERM came had nothing to drain: that is clean too
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def cluster_problem(config: ServerConfig) -> str | None:
    """Why this worker / broker / store combination is unsafe, in one line (or None).

    Several workers without a broker would each see only their own connections: a
    message sent on one would never reach room members on another, and presence
    would be per worker. No store makes that safe, so it is refused outright. A broker
    needs a store every server shares: each seq is assigned where the item becomes
    durable, and two SQLite files (or memories) would hand out the same seqs twice.
    """
    cluster, url = config.cluster, config.store.url
    shared = url.startswith(("postgresql://", "postgres://"))
    if cluster.broker and not cluster.broker.startswith(("redis://", "rediss://", "unix://")):
        return f"--broker must be a redis://, rediss:// or unix:// URL, not {cluster.broker!r}"
    if cluster.workers > 1 and not cluster.broker:
        return (
            f"--workers {cluster.workers} needs --broker redis://...: without a broker each "
            "worker sees only its own connections, so messages would not reach room members "
            "on the other workers (docs/SCALING.md)"
        )
    if cluster.broker and not shared:
        return (
            "--broker needs a shared store, --store postgresql://...: workers and machines "
            "that share live traffic must share history and room seqs (docs/SCALING.md)"
        )
    return None


def supervise(config: ServerConfig) -> int:
    """Blocking entry point of ``rtbench serve --workers N`` (N > 1): the exit code."""
    import resource

    import uvloop

    from reference_server.store import make_store

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    shown = make_store(config.store.url).url  # without the password
    return uvloop.run(Supervisor(config, config.cluster.workers, shown).run())


async def preflight(config: ServerConfig) -> None:
    """Open the store (migrating its schema once) and reach the broker, before any worker."""
    from reference_server.store import StoreError, make_store

    store_cfg = config.store
    try:
        store = make_store(store_cfg.url, store_cfg.synchronous, store_cfg.max_batch)
        await store.open(lambda batch, seconds, ended_ns: None)
    except (OSError, StoreError) as exc:
        raise SupervisorError(str(exc)) from None
    await store.close()
    if config.cluster.broker:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        from reference_server.config import redact_url

        client = aioredis.Redis.from_url(config.cluster.broker, socket_connect_timeout=2)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            url = redact_url(config.cluster.broker)
            raise SupervisorError(f"cannot connect to broker {url}: {exc}") from None
        finally:
            await client.aclose()


# ---------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is told by its supervisor."""

    index: int
    count: int
    sock: socket.socket
    stats_path: Path

    def ready(self) -> None:
        sys.stdout.buffer.write(READY + b"\n")
        sys.stdout.flush()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def worker_main() -> None:
    """Entry point of ``python -m reference_server.workers`` (started by the supervisor)."""
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before the line above
        raise SystemExit(1)
    config = msgspec.json.decode(sys.stdin.buffer.read(), type=ServerConfig)
    index = int(os.environ[ENV_INDEX])
    spec = WorkerSpec(
        index=index,
        count=int(os.environ[ENV_COUNT]),
        sock=socket.socket(fileno=int(os.environ[ENV_FD])),
        stats_path=Path(os.environ[ENV_STATS]),
    )
    from reference_server.server import StartupError, run

    try:
        run(config, worker=spec)
    except StartupError as exc:
        print(f"rtbench: worker {index}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    worker_main()
