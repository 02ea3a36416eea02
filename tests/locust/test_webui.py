"""The Realtime SLO tab in Locust's web UI, checked in a real headless Chromium."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.locust.conftest import listening_port, scenario_file, slo_file, start_locust, stop
from tests.support.server import ServerProcess

pytestmark = pytest.mark.browser

TAB = "Realtime SLO"
TARGETS = ("uptime", "delivery latency", "concurrent connections", "connection recovery")
CHAT = """
scenario = "chat"
users = 20
room_size = 10
rate = 2.0
ramp = 0.5
duration = 6.0
drain = 5.0
"""


def slo_state(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/rtbench/slo", timeout=10) as response:
        return json.loads(response.read())


def wait_for_phase(base: str, phases: tuple[str, ...], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = slo_state(base)
        if state["phase"] in phases:
            return state
        time.sleep(0.2)
    raise AssertionError(f"phase never reached {phases}: {state}")


def shown_text(browser, wanted: tuple[str, ...]) -> str:  # type: ignore[no-untyped-def]
    """Wait until the page shows every ``wanted`` text; its text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(driver) -> str | None:  # type: ignore[no-untyped-def]
        text = driver.find_element(By.TAG_NAME, "body").text
        return text if all(w in text for w in wanted) else None

    try:
        return WebDriverWait(browser, 30).until(shown)
    except TimeoutException:
        body = browser.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"the page never showed {wanted}; it shows:\n{body[:2000]}") from None


def tab_text(browser, url: str, wanted: tuple[str, ...]) -> str:  # type: ignore[no-untyped-def]
    """Load ``url`` and wait until the page shows every ``wanted`` text."""
    browser.get(url)
    return shown_text(browser, wanted)


def test_realtime_slo_tab_shows_the_four_targets_live_and_final(
    reference_server: ServerProcess,
    browser,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    scenario = scenario_file(tmp_path / "chat.toml", CHAT)
    slo = slo_file(tmp_path / "slo.toml", delivery_ms=5000)
    proc = start_locust(
        "--web-host", "127.0.0.1", "--web-port", "0", "--scenario", str(scenario),
        "--slo", str(slo), cwd=tmp_path, log=tmp_path / "locust.log",
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{listening_port(proc.pid)}"
        # the start form carries the scenario's users; start it as a person would
        tab_text(browser, f"{base}/", ("Number of users", "Custom parameters"))
        users = browser.find_element(By.NAME, "userCount")
        assert users.get_attribute("value") == "20"  # the file's users, not Locust's 1
        assert slo_state(base)["phase"] == "not started"
        # a modifier stays down until the end of one send_keys call: select, then type
        users.send_keys(Keys.CONTROL, "a")
        users.send_keys(Keys.BACKSPACE, "24")
        assert users.get_attribute("value") == "24"
        browser.find_element(By.NAME, "host").send_keys(reference_server.url)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for_phase(base, ("running",))
        browser.find_element(By.XPATH, f"//button[@role='tab'][contains(., '{TAB}')]").click()
        live = shown_text(browser, (*TARGETS, "so far", "running"))
        assert "realtime slo" in live.lower() and "p99 < 5000 ms" in live
        # the four targets first, in the SLO file's order (not sorted by Locust's table)
        positions = [live.index(name) for name in TARGETS]
        assert positions == sorted(positions)
        browser.save_screenshot(str(tmp_path / "live.png"))
        assert "connections held" in live and "lost deliveries" in live

        final_state = wait_for_phase(base, ("done",))
        assert final_state["exit_code"] == 0
        final = tab_text(browser, f"{base}/?tab=realtime-slo", (*TARGETS, "done"))
        assert "so far" not in final
        rows = {row["figure"]: row for row in final_state["rows"]}
        assert rows["delivery latency"]["status"] == "pass"
        assert rows["lost deliveries"]["measured"] == "0"
        assert rows["uptime"]["status"] == "not measured"
        assert rows["connections held"]["measured"] == "24"

        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe
    finally:
        stop(proc)
    log = (tmp_path / "locust.log").read_text()
    assert "Traceback" not in log, log[-3000:]
