"""Run a protocol's worked example from docs/ADAPTERS.md, as a user would.

Each protocol's section holds an options block (``[protocol_options]`` with every
option and its default), a scenario file (a TOML block starting ``# NAME.toml``) and the
``rtbench run`` command. The command runs as written, in an empty directory, with one
substitution a shared test machine needs: the test server's address for the example's.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from loadtest.adapters import Adapter, make_adapter

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS_MD = (ROOT / "docs" / "ADAPTERS.md").read_text()


def section(heading: str) -> str:
    start = ADAPTERS_MD.index(heading)
    end = ADAPTERS_MD.find("\n## ", start + len(heading))
    return ADAPTERS_MD[start : end if end > 0 else None]


def options_block(heading: str, protocol: str) -> Adapter:
    """The section's options block, which must build the adapter (defaults as written)."""
    blocks = re.findall(r"```toml\n(.*?)```", section(heading), re.S)
    (options,) = [b for b in blocks if b.startswith("[protocol_options]")]
    return make_adapter(protocol, tomllib.loads(options)["protocol_options"])


def run_worked_example(heading: str, target: str, tmp_path: Path) -> str:
    """Write the scenario file, run the command against ``target``; its stdout."""
    text = section(heading)
    (example,) = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if b.startswith("# ")]
    name = example.split("\n", 1)[0][2:].strip()
    (tmp_path / name).write_text(example)
    (command,) = re.findall(r"```sh\n(.*?)```", text, re.S)
    argv = shlex.split(command.strip())
    assert argv[:2] == ["rtbench", "run"] and "--target" in argv, command
    argv[argv.index("--target") + 1] = target
    rtbench = [sys.executable, "-c", "from rtbench.entry import run; run()"]
    done = subprocess.run(
        [*rtbench, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    # 0, or 1 when this busy machine made p99 miss 100 ms: the command worked either way
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"delivery_latency\s.*\b(pass|fail)\b", out), out
    counts = re.search(r"expected = delivered \+ lost\W+([\d,]+) = ([\d,]+) \+ ([\d,]+)", out)
    assert counts is not None, out
    expected, delivered, lost = (int(n.replace(",", "")) for n in counts.groups())
    assert expected == delivered > 0 and lost == 0, out
    return out
