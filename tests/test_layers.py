"""The layering of docs/DEVELOPING.md, made a test over every import (lazy ones included).

- the ``rtbench`` core (protocol, SLO rules, histograms, results, report) imports no part;
  only the command layer (``rtbench.cli``, and ``rtbench.entry`` that starts it) composes
  the parts;
- ``loadtest`` and ``monitor`` know the reference server only through ``rtbench.protocol``,
  never ``reference_server``: their job is to measure servers that are not ours;
- ``loadtest`` never imports ``monitor`` (the monitor uses the load test's client);
- ``reference_server`` imports neither measuring part;
- the drivers (native engine, Locust nodes, monitor) never import each other: what they
  share is in the socket-free client and the engine-neutral run core (``loadtest.run``);
- the load test's shared parts (everything in ``loadtest`` but the two drivers) import
  no driver, with two entries as the only exceptions: ``loadtest.run.entry`` starts the
  native engine, and ``loadtest.locustfile`` is the file Locust loads;
- a benchmark script imports no other benchmark script, only the support modules
  (``benchmarks.kit`` for shared measuring code, ``procs``, ``lock``, ...); the suite
  (``benchmarks.suite``) alone composes its parts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("rtbench", "loadtest", "monitor", "reference_server")
DRIVERS = ("loadtest.engine", "loadtest.locust", "monitor")
LOAD_DRIVERS = ("loadtest.engine", "loadtest.locust")
DRIVER_ENTRIES = {
    "loadtest.run.entry": "loadtest.engine.coordinator",
    "loadtest.locustfile": "loadtest.locust",
}
"""The only imports of a driver by the load test's shared parts: the entries that start
one (module -> what of the driver it may import, that module or below it)."""


def imports(parts: tuple[str, ...] = PARTS) -> set[tuple[str, str]]:
    """(importing module, imported module) for every absolute import of the parts
    (``from package import module`` counts as an import of the module)."""
    edges: set[tuple[str, str]] = set()
    for part in parts:
        for path in (ROOT / part).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    edges.add((module, node.module))
                    if node.module in parts:
                        edges.update((module, f"{node.module}.{a.name}") for a in node.names)
                elif isinstance(node, ast.Import):
                    edges.update((module, alias.name) for alias in node.names)
    return {(a, b) for a, b in edges if b.split(".")[0] in parts}


def _is(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def broken(edges: set[tuple[str, str]]) -> list[str]:
    out = []
    for source, target in sorted(edges):
        if (
            _is(source, "rtbench")
            and not _is(source, "rtbench.cli", "rtbench.entry")
            and not _is(target, "rtbench")
        ):
            out.append(f"{source} -> {target}: the core imports no part")
        if _is(source, "loadtest", "monitor") and _is(target, "reference_server"):
            out.append(f"{source} -> {target}: measure the server through rtbench.protocol")
        if _is(source, "loadtest") and _is(target, "monitor"):
            out.append(f"{source} -> {target}: the load test does not use the monitor")
        if _is(source, "reference_server") and _is(target, "loadtest", "monitor"):
            out.append(f"{source} -> {target}: the server knows nothing of its measurers")
        crossing = [d for d in DRIVERS if _is(source, d)], [d for d in DRIVERS if _is(target, d)]
        if crossing[0] and crossing[1] and crossing[0] != crossing[1]:
            out.append(f"{source} -> {target}: drivers never import each other")
        if (
            _is(source, "loadtest")
            and not _is(source, *LOAD_DRIVERS)
            and _is(target, *LOAD_DRIVERS)
            and not (source in DRIVER_ENTRIES and _is(target, DRIVER_ENTRIES[source]))
        ):
            out.append(f"{source} -> {target}: shared load-test code imports no driver")
    return out


def test_the_layers_hold() -> None:
    assert broken(imports()) == []


def test_the_driver_entries_are_all_still_there() -> None:
    """An entry that is gone comes off the list, so the list only shrinks."""
    edges = imports()
    for source, allowed in DRIVER_ENTRIES.items():
        assert any(s == source and _is(t, allowed) for s, t in edges), source


def test_the_rule_catches_a_crossing() -> None:
    """The check itself can fail: each rule, on a made-up edge."""
    made_up = {
        ("rtbench.slo", "loadtest.judge"),
        ("monitor.probes", "reference_server.rooms"),
        ("loadtest.engine.worker", "monitor.store"),
        ("reference_server.app", "loadtest.client"),
        ("loadtest.engine.worker", "loadtest.locust.node"),
        ("loadtest.judge", "loadtest.engine.coordinator"),
        ("loadtest.run.outcome", "loadtest.locust.messages"),
        ("loadtest.run.entry", "loadtest.engine.coordinator"),  # the native run's entry
    }
    assert len(broken(made_up)) == 8  # the third breaks two rules (the monitor is a driver)


BENCHMARK_SUPPORT = {
    "benchmarks",
    "benchmarks.kit",
    "benchmarks.procs",
    "benchmarks.lock",
    "benchmarks.context",
    "benchmarks.render",
    "benchmarks.profile",
    "benchmarks.whose",
}
"""What a benchmark script may import from ``benchmarks``: shared measuring code lives in
``kit``, servers and cores in ``procs``, the machine lock in ``lock``, the suite's
context and report in ``context`` and ``render``, a server's py-spy profile in
``profile``, and whose a chat step's delay is (the server's own figures, the truth probe,
the rule that weighs them) in ``whose``."""
SUITE_PARTS = ("benchmarks.collected", "benchmarks.micro_runner", "benchmarks.macro")
"""The suite's own parts: only ``benchmarks.suite`` (and the parts among themselves)
import them."""


def benchmark_crossings(edges: set[tuple[str, str]]) -> list[str]:
    out = []
    for source, target in sorted(edges):
        if target in BENCHMARK_SUPPORT or source in BENCHMARK_SUPPORT:
            continue
        if _is(target, *SUITE_PARTS) and _is(source, "benchmarks.suite", *SUITE_PARTS):
            continue
        out.append(f"{source} -> {target}: benchmarks share code through benchmarks.kit")
    return out


def test_benchmarks_import_only_support_modules() -> None:
    assert benchmark_crossings(imports(("benchmarks",))) == []


def test_the_benchmark_rule_catches_a_crossing() -> None:
    made_up = {
        ("benchmarks.locust_vs_native", "benchmarks.generator_efficiency"),
        ("benchmarks.run_metrics_cost", "benchmarks.generator_efficiency"),
        ("benchmarks.scaleout", "benchmarks.macro.fanout"),
        ("benchmarks.generator_efficiency", "benchmarks.kit"),
        ("benchmarks.suite", "benchmarks.collected"),
    }
    assert len(benchmark_crossings(made_up)) == 3
