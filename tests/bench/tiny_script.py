"""A real per-issue-style benchmark script, for the suite's collection contract.

It takes the machine lock itself (as the per-issue scripts do), prints progress, then
its figures as the last JSON object on stdout; ``--quick`` halves its work.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.lock import exclusive_machine
from rtbench.histogram import LatencyHistogram


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 500 if args.quick else 1000
    with exclusive_machine("tiny_script"):
        print(f"recording {n} values")
        hist = LatencyHistogram()
        started = time.perf_counter()
        for value in range(1, n + 1):
            hist.record_us(value)
        seconds = time.perf_counter() - started
    print(
        json.dumps({"values": hist.count, "p50_ms": hist.percentile_ms(50), "s": seconds}, indent=2)
    )


if __name__ == "__main__":
    main()
