"""Fixtures for the live-export tests: a real Prometheus server of the test's own.

Debian's ``prometheus`` package gives the server (``.ci/run`` installs it for promtool);
without it the tests skip, except under RTBENCH_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_service
from tests.support.fixtures import reference_server  # noqa: F401  (the shared fixture)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    """One Prometheus server: its own config, a temporary TSDB, a free loopback port."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self,
        *,
        scrape: str | None = None,
        rules: list[Path] = (),  # type: ignore[assignment]
        receiver: bool = False,
    ) -> Prometheus:
        """Scrape ``scrape`` (HOST:PORT) every second; ``receiver``: accept remote write."""
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rules],
            "scrape_configs": [],
        }
        if scrape:
            config["scrape_configs"].append(
                {"job_name": "rtbench-run", "static_configs": [{"targets": [scrape]}]}
            )
        path = self.folder / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.port = free_port()
        args = [
            self.binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={self.folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if receiver:
            args += ["--web.enable-remote-write-receiver", "--enable-feature=native-histograms"]
        log = (self.folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "prometheus did not become ready: "
                    + (self.folder / "prometheus.log").read_text()
                )
            time.sleep(0.1)  # poll the readiness endpoint, bounded by the deadline above

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as answer:
            doc = json.load(answer)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, check: Callable[[float], bool], within: float = 20) -> float:
        """Poll until ``expr`` has one sample that passes ``check`` (a rule, a late scrape)."""
        deadline = time.monotonic() + within
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.query(expr)
            if len(last) == 1 and check(float(last[0]["value"][1])):
                return float(last[0]["value"][1])
            time.sleep(0.2)  # Prometheus evaluates and scrapes each second
        raise AssertionError(f"{expr}: no passing sample within {within} s; last {last}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    need_service("prometheus", path is not None, "install Debian's prometheus package")
    return path  # type: ignore[return-value]


@pytest.fixture
def prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[Prometheus]:
    """An unstarted Prometheus; the test starts it with what it needs."""
    server = Prometheus(prometheus_binary, tmp_path / "prometheus")
    server.folder.mkdir()
    try:
        yield server
    finally:
        server.stop()
