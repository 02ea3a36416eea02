"""Run the real ``rtbench`` command in a subprocess, as a user would, and read its results."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from rtbench.results import Results, read_results

RTBENCH = [sys.executable, "-c", "from rtbench.entry import run; run()"]


def rtbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rtbench ARGS``; bounded in time (its subprocess is ended by ``run``'s timeout)."""
    return subprocess.run(
        [*RTBENCH, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def rtbench_run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Results]:
    """``rtbench run ARGS --quiet --out OUT`` and the results.json it wrote."""
    done = rtbench("run", *args, "--quiet", "--out", str(out))
    assert (out / "results.json").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, read_results(out / "results.json")


ADAPTERS_MD = Path(__file__).resolve().parents[2] / "docs" / "ADAPTERS.md"


def doc_example(heading: str, tmp_path: Path, target: str) -> list[str]:
    """The worked example of a docs/ADAPTERS.md section, ready to run as written: its
    scenario file (the ```toml block whose first line names it) written to ``tmp_path``,
    and its ``rtbench run`` line, with ``target`` for the documented URL and its paths
    under ``tmp_path``. Returns the arguments after ``rtbench``."""
    text = ADAPTERS_MD.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    section = text[start : end if end > 0 else None]
    files = re.findall(r"```toml\n# (\S+\.toml)\n(.*?)```", section, re.S)
    commands = re.findall(r"```sh\n(rtbench run .*?)\n```", section, re.S)
    assert len(files) == 1 and len(commands) == 1, "one scenario file and one command"
    name, body = files[0]
    (tmp_path / name).write_text(body)
    args = shlex.split(commands[0])[1:]
    args[args.index("--target") + 1] = target
    args[args.index(name)] = str(tmp_path / name)
    args[args.index("--out") + 1] = str(tmp_path / "out")
    return args


def doc_options(heading: str) -> list[dict]:
    """Every ``[protocol_options]`` table of a docs/ADAPTERS.md section's TOML blocks."""
    text = ADAPTERS_MD.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    blocks = re.findall(r"```toml\n(.*?)```", text[start : end if end > 0 else None], re.S)
    return [tomllib.loads(b)["protocol_options"] for b in blocks]
