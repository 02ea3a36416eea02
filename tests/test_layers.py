"""The layering of docs/DEVELOPING.md, made a test over every import (lazy ones included).

- the ``rtbench`` core (protocol, SLO rules, histograms, results, report) imports no part;
  only the command layer (``rtbench.cli``, and ``rtbench.entry`` that starts it) composes
  the parts;
- ``loadtest`` and ``monitor`` know the reference server only through ``rtbench.protocol``,
  never ``reference_server``: their job is to measure servers that are not ours;
- ``loadtest`` never imports ``monitor`` (the monitor uses the load test's client);
- ``reference_server`` imports neither measuring part;
- the drivers (native engine, Locust nodes, monitor) never import each other;
- a benchmark script imports no other benchmark script, only the support modules
  (``benchmarks.kit`` for shared measuring code, ``procs``, ``lock``, ...); the suite
  (``benchmarks.suite``) alone composes its parts.

The last rule has known exceptions, each listed below: code both drivers share that
still lives inside the engine. The list may only shrink (an import added to it is a
review decision, not a quiet edit).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("rtbench", "loadtest", "monitor", "reference_server")
KNOWN_DRIVER_CROSSINGS = {
    ("loadtest.locust.connection", "loadtest.engine.failures"),
    ("loadtest.locust.control", "loadtest.engine"),
    ("loadtest.locust.control", "loadtest.engine.coordinator"),
    ("loadtest.locust.messages", "loadtest.engine"),
    ("loadtest.locust.node", "loadtest.engine"),
    ("loadtest.locust.wsclient", "loadtest.engine.failures"),
    ("monitor.transport", "loadtest.engine.failures"),
}
"""Failure classes, wire messages and the Outcome merge, shared by the engine and the
Locust nodes but defined in the engine: to move into an engine-neutral run core."""


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
        drivers = ("loadtest.engine", "loadtest.locust", "monitor")
        crossing = [d for d in drivers if _is(source, d)], [d for d in drivers if _is(target, d)]
        if (
            crossing[0]
            and crossing[1]
            and crossing[0] != crossing[1]
            and (source, target) not in KNOWN_DRIVER_CROSSINGS
        ):
            out.append(f"{source} -> {target}: drivers never import each other")
    return out


def test_the_layers_hold() -> None:
    assert broken(imports()) == []


def test_the_known_crossings_are_all_still_there() -> None:
    """An exception that is gone comes off the list, so the list only shrinks."""
    assert imports() >= KNOWN_DRIVER_CROSSINGS


def test_the_rule_catches_a_crossing() -> None:
    """The check itself can fail: each rule, on a made-up edge."""
    made_up = {
        ("rtbench.slo", "loadtest.judge"),
        ("monitor.probes", "reference_server.rooms"),
        ("loadtest.engine.worker", "monitor.store"),
        ("reference_server.app", "loadtest.client"),
        ("loadtest.engine.worker", "loadtest.locust.node"),
    }
    assert len(broken(made_up)) == 6  # the third breaks two rules (the monitor is a driver)


BENCHMARK_SUPPORT = {
    "benchmarks",
    "benchmarks.kit",
    "benchmarks.procs",
    "benchmarks.lock",
    "benchmarks.context",
    "benchmarks.render",
    "benchmarks.profile",
}
"""What a benchmark script may import from ``benchmarks``: shared measuring code lives in
``kit``, servers and cores in ``procs``, the machine lock in ``lock``, the suite's
context and report in ``context`` and ``render``, a server's py-spy profile in
``profile``."""
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
