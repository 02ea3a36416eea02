"""A Mosquitto of the test's own (a real MQTT 5 broker) behind the WebSocket bridge.

Mosquitto is installed on these machines (and by ``.ci/run``, Debian's ``mosquitto``); the
machine's own instance on port 1883 is never used. Each test starts one on a free port of
127.0.0.1 with a config file of its own in a temp dir (plain TCP listener, anonymous
clients, persistence in that dir), and puts ``mqtt_bridge`` in front of it: Mosquitto's
WebSocket listener fails on Debian's libwebsockets here, so MQTT over WebSocket reaches
it through that bridge (its docstring says why not websockify). ``bridge.stop()`` /
``bridge.start()`` cut and restore every client's path to the broker while the broker and
its sessions live on. Everything is stopped by its PID at the end of the test. A machine
without Mosquitto skips these tests, or fails them under RTBENCH_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.conftest import need_service
from tests.thirdparty.servers import ServerProc

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """One ``mosquitto -c`` process on ``port`` (plain TCP), stopped by its PID."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rtbench-mosquitto-"))
        self.port = _free_port()
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",  # a resumed session's queue is the subject
            "user root",  # run as root (CI): stay so, the temp dir is root's (ignored otherwise)
        ]
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> Mosquitto:
        assert MOSQUITTO is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _listening(self.port):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class Bridge(ServerProc):
    """``mqtt_bridge`` to ``upstream``; ``start()`` again after ``stop()`` takes the same port."""

    def __init__(self, upstream: int) -> None:
        super().__init__("tests.thirdparty.mqtt_bridge", "--upstream", f"127.0.0.1:{upstream}")
        self.upstream = upstream

    def start(self, timeout: float = 20.0) -> Bridge:
        self.argv[self.argv.index("--port") + 1] = str(self.port)  # 0 the first time
        super().start(timeout)
        return self

    def relayed(self) -> int:
        """How many connections to the broker the bridge holds now."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0
        try:
            conns = psutil.Process(proc.pid).net_connections("tcp")
        except psutil.Error:
            return 0
        return sum(
            1
            for c in conns
            if c.raddr and c.raddr.port == self.upstream and c.status == "ESTABLISHED"
        )

    def kill(self) -> None:
        """SIGKILL: every relayed connection dies without a close frame or DISCONNECT."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()


class MqttBroker:
    """Mosquitto and its bridge: ``url`` (MQTT over WebSocket), ``tcp_port``."""

    def __init__(self) -> None:
        self.mosquitto = Mosquitto().start()
        try:
            self.bridge = Bridge(self.mosquitto.port).start()
        except Exception:
            self.mosquitto.stop()
            raise

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.bridge.port}/mqtt"

    @property
    def tcp_port(self) -> int:
        return self.mosquitto.port

    def close(self) -> None:
        self.bridge.close()
        self.mosquitto.stop()
        shutil.rmtree(self.mosquitto.dir, ignore_errors=True)


def mosquitto_broker() -> Iterator[MqttBroker]:
    """A fixture body: a Mosquitto behind the bridge, stopped at the end of the test."""
    need_service("mosquitto", MOSQUITTO is not None, "Debian: apt-get install mosquitto")
    broker = MqttBroker()
    try:
        yield broker
    finally:
        broker.close()
