"""What does durability cost? The SQLite store's group commit under synchronous=FULL vs NORMAL.

Drives ``reference_server.store.SqliteStore`` directly (no network) with C sends in
flight at once (each completion submits the next, as C busy clients would), and
reports sends made durable per second, commits per second, the mean batch and the
commit latency, for both settings. WAL + NORMAL does not fsync on commit: it
survives a killed process but not a power cut. FULL fsyncs every group commit.

    .venv/bin/python -m benchmarks.store_durability

(takes the machine lock, /tmp/rtbench-bench.lock, itself). Writes
reports/store-durability.md (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from benchmarks.lock import exclusive_machine
from reference_server.store.base import KIND_MESSAGE, AppendItem, EnsureRoom, WriteOp
from reference_server.store.sqlite import SqliteStore


async def measure(mode: str, sends: int, in_flight: int, workdir: Path) -> dict[str, float]:
    store = SqliteStore(str(workdir / f"{mode}-{time.monotonic_ns()}.db"), mode)
    done = asyncio.Event()
    latencies: list[float] = []
    batches: list[int] = []
    state = {"submitted": 0, "acked": 0}

    def submit() -> None:
        i = state["submitted"]
        state["submitted"] += 1
        op = AppendItem(
            time.perf_counter(), f"room{i % 10}", "bench", KIND_MESSAGE, f"c{i}", "x" * 100
        )
        store.submit(op)

    def on_batch(batch: list[WriteOp], seconds: float, ended_ns: int) -> None:
        latencies.append(seconds)
        batches.append(len(batch))
        for op in batch:
            if isinstance(op, AppendItem):
                assert op.error is None, op.error
                state["acked"] += 1
                if state["submitted"] < sends:
                    submit()
        if state["acked"] >= sends:
            done.set()

    await store.open(on_batch)
    for r in range(10):
        store.submit(EnsureRoom(None, f"room{r}", False, ["bench"]))
    await store.flush()
    latencies.clear()
    batches.clear()
    started = time.perf_counter()
    for _ in range(in_flight):
        submit()
    await done.wait()
    elapsed = time.perf_counter() - started
    await store.close()
    latencies.sort()
    return {
        "sends_per_s": sends / elapsed,
        "commits_per_s": len(batches) / elapsed,
        "mean_batch": statistics.fmean(batches),
        "commit_p50_ms": latencies[len(latencies) // 2] * 1000,
        "commit_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def main_async(args: argparse.Namespace) -> dict[tuple[str, int], dict[str, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="rtbench-store-", dir=args.dir))
    results = {}
    try:
        for mode in ("full", "normal"):
            for in_flight in args.in_flight:
                runs = [
                    await measure(mode, args.sends, in_flight, workdir) for _ in range(args.runs)
                ]
                results[(mode, in_flight)] = {
                    k: statistics.median(r[k] for r in runs) for k in runs[0]
                }
                print(mode, in_flight, results[(mode, in_flight)], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--dir", default=None, help="where the databases go: the disk measured (default: $TMPDIR)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/store-durability.md"))
    args = parser.parse_args()
    with exclusive_machine("store_durability"):
        results = uvloop.run(main_async(args))
    command = "python -m benchmarks.store_durability " + " ".join(sys.argv[1:])
    lines = [
        "# Store durability: SQLite group commit, synchronous=FULL vs NORMAL",
        "",
        f"Command: `{command.strip()}` (medians of {args.runs} runs of {args.sends:,} "
        "100-byte sends over 10 rooms; WAL; one writer thread).",
        "",
        "| synchronous | sends in flight | durable sends/s | commits/s | mean batch | "
        "commit p50 | commit p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for (mode, in_flight), r in results.items():
        lines.append(
            f"| {mode.upper()} | {in_flight} | {r['sends_per_s']:,.0f} | {r['commits_per_s']:,.0f} "
            f"| {r['mean_batch']:.1f} | {r['commit_p50_ms']:.2f} ms | {r['commit_p99_ms']:.2f} ms |"
        )
    table = "\n".join(lines) + "\n"
    previous = args.out.read_text() if args.out.exists() else ""
    marker = "\n## Choice\n"
    args.out.write_text(table + (previous[previous.index(marker) :] if marker in previous else ""))
    print(table)


if __name__ == "__main__":
    main()
