"""Shared test fixtures: real services on loopback, found through the environment.

Redis and PostgreSQL come from RTBENCH_TEST_REDIS_URL / RTBENCH_TEST_POSTGRES_DSN
(defaulting to the machine's own). A test that needs one is skipped with a clear
reason when it cannot be reached, except under RTBENCH_REQUIRE_SERVICES=1 (CI),
where an unreachable service fails the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

REQUIRE_SERVICES = os.environ.get("RTBENCH_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("RTBENCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "RTBENCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def need_service(name: str, available: bool, how: str) -> None:
    """Skip (or, in CI, fail) a test whose real service is not there."""
    if available:
        return
    message = f"{name} is not reachable ({how})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; RTBENCH_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    need_service("Redis", _reachable(REDIS_URL, 6379), REDIS_URL)
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    need_service("PostgreSQL", _reachable(POSTGRES_DSN, 5432), POSTGRES_DSN)
    return POSTGRES_DSN


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    need_service("promtool", path is not None, "install Debian's prometheus package")
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    need_service("chromium", path is not None, "install Debian's chromium package")
    return path  # type: ignore[return-value]


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[object]:
    """A headless Chromium (selenium), one per test module.

    Its console log is read with ``get_log('browser')``.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    need_service("chromedriver", driver_path is not None, "install Debian's chromium-driver")
    profile = tempfile.mkdtemp(prefix="rtbench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1100,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
