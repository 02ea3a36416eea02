"""Micro-benchmarks (pytest-benchmark) of the hot paths: run by ``rtbench bench --only micro``.

Not part of ``make test`` (pytest's default paths are ``tests/``); collect them by hand
with ``.venv/bin/pytest benchmarks/micro`` (add ``--benchmark-disable`` to just check
that each runs once).
"""
