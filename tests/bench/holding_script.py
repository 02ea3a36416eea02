"""A script that starts a process of its own and holds it, for stopping a script early.

It starts ``sleep`` (as a benchmark script starts a server or a Node peer), writes that
child's PID to ``--pid-file`` and waits; its ``finally`` stops the child, as the real
scripts' context managers do. With ``--ignore-sigint`` it ignores SIGINT, as a script
stuck outside Python would, so only SIGKILL to its group ends it and its child.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--ignore-sigint", action="store_true")
    args = parser.parse_args()
    if args.ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "300"])
    try:
        args.pid_file.write_text(f"{child.pid}\n")
        print("holding", child.pid, flush=True)
        time.sleep(300)
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    main()
