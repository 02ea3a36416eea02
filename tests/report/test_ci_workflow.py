"""The example CI workflow (docs/ci/rtbench.yml) really works: its shell steps run here,
in order, the way GitHub Actions runs them, against a real reference server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs" / "ci" / "rtbench.yml"
_EXPR = re.compile(r"\$\{\{\s*steps\.(\w+)\.outputs\.(\w+)\s*\}\}")


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps() -> list[dict]:
    (job,) = _workflow()["jobs"].values()
    return job["steps"]


def test_workflow_gates_on_verdicts_and_baseline_and_uploads_the_report():
    steps = _steps()
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "rtbench check " in runs and '--slo "$SLO_FILE"' in runs
    assert 'rtbench compare "$BASELINE" reports/ci/results.json' in runs
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "reports/ci/"
    assert steps[-1]["name"].startswith("Gate")
    env = _workflow()["env"]
    assert (ROOT / env["SLO_FILE"]).is_file() and (ROOT / env["BASELINE"]).is_file()
    assert "{port}" in env["SERVER_CMD"]  # the check starts the server on a port it picks


def _read_kv(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_workflow_steps_run_end_to_end(tmp_path):
    """Every `run:` step but the install, with a short check; the gate's decision must follow
    the codes `rtbench check` and `rtbench compare` returned. The check starts, restarts and
    stops the server itself, so no step of the workflow has a server to clean up."""
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "docs" / "ci", work / "docs" / "ci")
    github = {name: tmp_path / name for name in ("env", "output", "summary")}
    for path in github.values():
        path.touch()
    env = {
        **os.environ,
        **{k: str(v) for k, v in _workflow()["env"].items()},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CONNECTIONS": "60",
        "DURATION": "6",
        "GITHUB_ENV": str(github["env"]),
        "GITHUB_STEP_SUMMARY": str(github["summary"]),
    }
    outputs: dict[str, dict[str, str]] = {}
    codes: dict[str, int] = {}
    for step in _steps():
        if "run" not in step or step["name"].startswith("Install"):
            continue
        step_env = {
            k: _EXPR.sub(lambda m: outputs.get(m[1], {}).get(m[2], ""), str(v))
            for k, v in step.get("env", {}).items()
        }
        github["output"].write_text("")
        log = tmp_path / f"step-{len(codes)}.log"
        with log.open("w") as out:
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=work,
                env={**env, **_read_kv(github["env"]), **step_env,
                     "GITHUB_OUTPUT": str(github["output"])},
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=180,
                check=False,
            )  # fmt: skip
        codes[step["name"]] = proc.returncode
        if "id" in step:
            outputs[step["id"]] = _read_kv(github["output"])
        if step["name"].startswith("Gate"):
            break
        assert proc.returncode == 0, f"{step['name']}: {log.read_text()}"

    check_code, compare_code = int(outputs["check"]["code"]), int(outputs["compare"]["code"])
    assert check_code in (0, 1, 4) and compare_code in (0, 1)
    gate = codes[next(n for n in codes if n.startswith("Gate"))]
    assert (gate == 0) == (check_code == 0 and compare_code == 0)
    ci = work / "reports" / "ci"
    for name in ("results.json", "report.html", "junit.xml", "summary.md", "compare.md"):
        assert (ci / name).is_file(), name
    summary = github["summary"].read_text()
    assert "| target | objective | measured | verdict |" in summary
    assert "rtbench compare" in summary and "| delivery p99 (ms) | lower |" in summary
