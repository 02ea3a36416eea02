"""Prometheus side: the shipped rules load and fire as designed, the live /metrics lints clean,
and the Grafana dashboard only queries series that exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.monitor.conftest import echo_config, get, healthz, poll, running

pytestmark = pytest.mark.promtool

PROM = Path(__file__).resolve().parents[2] / "monitor" / "prometheus"
RULE_FILES = [PROM / "rules.yml", PROM / "alerts.yml"]


def _promtool(promtool: str, *args: str, stdin: bytes | None = None, cwd: Path | None = None):
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, timeout=60, cwd=cwd, check=False
    )


def test_rules_pass_promtool_check(promtool):
    done = _promtool(promtool, "check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"SUCCESS: 17 rules found" in done.stdout and b"SUCCESS: 7 rules found" in done.stdout


def test_burn_rate_alerts_fire_and_stop_as_designed(promtool):
    """promtool unit tests: half the intervals failing pages within minutes, and stops after."""
    tests = Path(__file__).with_name("alerts_test.yml")
    done = _promtool(promtool, "test", "rules", tests.name, cwd=tests.parent)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def _recorded_names() -> set[str]:
    text = "\n".join(path.read_text() for path in RULE_FILES)
    return set(re.findall(r"^\s*- record: (\S+)$", text, re.M))


async def test_live_metrics_lint_clean_and_feed_rules_and_dashboard(
    promtool, echo_target, tmp_path
):
    _, port = echo_target
    async with running(echo_config(port, tmp_path / "m.db")) as monitor:

        async def probed():
            _, doc = await healthz(monitor)
            return doc["targets"][0]["windows"][0]["good"] >= 2

        await poll(probed, 20, "two good probes")
        status, body = await get(monitor, "/metrics")
    assert status == 200
    done = _promtool(promtool, "check", "metrics", stdin=body)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout.decode() + done.stderr.decode()
    )
    text = body.decode()
    exposed = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))
    assert 'rtbench_monitor_up{target="echo"} 1.0' in text
    assert 'rtbench_monitor_uptime_ratio{target="echo",window="30d"} 1.0' in text
    assert 'rtbench_monitor_slo_state{slo="uptime",state="pass",target="echo"} 1.0' in text
    assert 'rtbench_monitor_target_connections{target="echo"}' in text  # read from /healthz

    # every series a rule or the dashboard reads is exposed, or recorded by a rule
    known = exposed | _recorded_names()
    rule_text = "\n".join(p.read_text() for p in RULE_FILES)
    dashboard = json.loads((PROM / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for source in [rule_text, *exprs]:
        for name in re.findall(r"\b(rtbench[a-zA-Z0-9_:]*[a-zA-Z0-9])\b", source):
            if name.startswith("rtbench_monitor") or ":" in name:
                assert name in known, f"{name} is neither exposed nor recorded"
