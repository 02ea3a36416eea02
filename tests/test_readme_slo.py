"""The README's commands that name ``slo.toml`` run as written, from the repository root.

Every ``rtbench ... --slo slo.toml`` line of the README (continuations joined) is run
against a real reference server: the README's port (8765) becomes the test server's
port and the sizes shrink (users, connections, duration) so that the suite stays short;
every other word is the README's. Each must read the root ``slo.toml`` and judge against
it (exit 0 or 1, never 2 for usage), and ``results.json`` must carry that SLO. The
monitor's line runs until its /healthz answers. A line whose target is not on this
machine (the distributed Locust example) is checked for its flags alone.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rtbench.exitcodes import ExitCode
from rtbench.results import read_results
from rtbench.slo import dump_slo, load_slo
from tests.support.fixtures import start_server  # noqa: F401  (the server factory below)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]
SMALLER = {
    "--users": "20",
    "-u": "20",
    "--connections": "40",
    "--duration": "3",
    "--rate": "1",
    "--interval": "1s",
}
"""Flag values shrunk for the suite; the README's own values are for a real run."""


def readme_commands() -> list[list[str]]:
    """Every ``rtbench`` command in the README's sh blocks that names ``slo.toml``."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("rtbench ") and "--slo slo.toml" in line:
                commands.append(shlex.split(line))
    return commands


COMMANDS = readme_commands()


def test_the_readme_names_the_root_slo_file_and_it_is_the_defaults() -> None:
    assert len(COMMANDS) >= 5, COMMANDS  # check, run, locust (2), monitor
    assert {argv[1] for argv in COMMANDS} >= {"check", "run", "locust", "monitor"}
    assert load_slo(ROOT / "slo.toml") == load_slo(None)  # commented defaults, not new ones


def _local(argv: list[str]) -> bool:
    return not any(re.search(r"//10\.|--master-host", word) for word in argv)


def _sized(argv: list[str], server: ServerProcess, out: Path) -> list[str]:
    """The README's words with this test's server, sizes and output folder."""
    words = [w.replace(":8765", f":{server.port}") for w in argv[1:]]
    for n, word in enumerate(words[:-1]):
        if word in SMALLER:
            words[n + 1] = SMALLER[word]
        elif word in ("--out", "-o"):
            words[n + 1] = str(out)
        elif word == "--server-cmd":
            words[n + 1] = words[n + 1].replace("python ", f"{sys.executable} ", 1)
            words[n + 1] = words[n + 1].replace("sqlite:///check.db", f"sqlite:///{out}.db")
    if argv[1] in ("run", "check", "locust") and "--quiet" not in words and argv[1] != "locust":
        words.append("--quiet")
    return words


@pytest.mark.parametrize("argv", [a for a in COMMANDS if _local(a)], ids=lambda a: " ".join(a[:3]))
def test_each_readme_command_reads_slo_toml_and_runs(
    argv: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: ServerProcess = request.getfixturevalue("start_server")()
    out = tmp_path / "out"
    words = _sized(argv, server, out)
    if argv[1] == "monitor":
        _monitor_answers(words, tmp_path)
        return
    done = subprocess.run(
        [*RTBENCH, *words], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    # judged against slo.toml: pass, fail (the README's sizes shrunk below its 10,000
    # connections fail that target) or inconclusive on a busy machine; never usage (2)
    # or unreachable (3)
    judged = (ExitCode.OK, ExitCode.SLO_FAILED, ExitCode.INCONCLUSIVE)
    assert done.returncode in judged, done.stdout[-2000:] + done.stderr[-2000:]
    results = read_results(out / "results.json")
    assert results.run.slo == dump_slo(load_slo(ROOT / "slo.toml"))


def _monitor_answers(words: list[str], tmp_path: Path) -> None:
    words += ["--db", str(tmp_path / "m.db"), "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [*RTBENCH, *words], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        address = None
        while address is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"http://(127\.0\.0\.1:\d+)/", line)
            address = found.group(1) if found else None
            assert line or proc.poll() is None, "the monitor exited"
        assert address, "the monitor never printed its address"
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as response:
            doc = json.loads(response.read())
        assert doc["slo"] == dump_slo(load_slo(ROOT / "slo.toml"))
    finally:
        proc.send_signal(signal.SIGTERM)  # the monitor this test started, by its PID
        proc.wait(20)


@pytest.mark.parametrize(
    "argv", [a for a in COMMANDS if not _local(a)], ids=lambda a: " ".join(a[:3])
)
def test_a_readme_command_for_other_machines_uses_real_flags(argv: list[str]) -> None:
    """Its target is on another machine: every flag it uses is one the command has."""
    help_text = subprocess.run(
        [*RTBENCH, argv[1], "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    flags = [w.split("=", 1)[0] for w in argv[2:] if w.startswith("--")]
    missing = [flag for flag in flags if flag not in help_text]
    assert not missing, f"{' '.join(argv)}: {missing} are not flags of rtbench {argv[1]}"
