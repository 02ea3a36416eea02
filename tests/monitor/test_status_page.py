"""The status page as a person sees it: headless Chromium, green then red, no console errors."""

from __future__ import annotations

import asyncio

import pytest

from tests.monitor.conftest import echo_config, healthz, lenient_slo, poll, running

pytestmark = pytest.mark.browser


def _page(browser, url: str) -> dict:
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    return browser.execute_script(
        """return {
             title: document.title,
             banner: document.querySelector('.banner').className,
             slos: [...document.querySelectorAll('.slo')]
                 .map(s => [s.dataset.slo, s.dataset.status]),
             hourly: document.querySelectorAll('.target .bars')[0].children.length,
             daily: document.querySelectorAll('.target .bars')[1].children.length,
             goodBars: document.querySelectorAll('.bar.good').length,
             incidents: [...document.querySelectorAll('tr.incident')].map(r => r.innerText),
             pills: [...document.querySelectorAll('.head .pill')].map(p => p.innerText),
           }"""
    )


def _severe(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


async def test_status_page_renders_green_then_red_without_console_errors(
    browser, echo_target, tmp_path
):
    target, port = echo_target
    async with running(echo_config(port, tmp_path / "m.db", slo=lenient_slo(tmp_path))) as monitor:
        host, http_port = monitor.address
        url = f"http://{host}:{http_port}/"

        async def probed():
            _, doc = await healthz(monitor)
            return doc["targets"][0]["windows"][0]["good"] >= 2

        await poll(probed, 20, "two good probes")
        page = await asyncio.to_thread(_page, browser, url)
        assert page["title"].startswith("All targets hold")
        assert "pass" in page["banner"].split()
        assert page["slos"] == [
            ["uptime", "pass"],
            ["delivery_latency", "pass"],
            ["connections", "not_measured"],
            ["recovery", "not_measured"],
        ]
        assert (page["hourly"], page["daily"]) == (24, 30)
        assert page["goodBars"] >= 2  # this hour and today (more across a boundary)
        assert page["pills"][:2] == ["up", "SLO holds"]
        assert page["incidents"] == []
        assert _severe(browser) == []

        await asyncio.to_thread(target.stop)

        async def down():
            status, _ = await healthz(monitor)
            return status == 503

        await poll(down, 10, "/healthz 503")
        page = await asyncio.to_thread(_page, browser, url)
        assert page["title"].startswith("SLO failing")
        assert "fail" in page["banner"].split()
        assert page["slos"][0] == ["uptime", "fail"]
        assert page["pills"][:2] == ["down", "SLO failing"]
        (incident,) = page["incidents"]
        assert "ongoing" in incident and "refused" in incident
        assert _severe(browser) == []
