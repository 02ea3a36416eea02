"""The ``rtbench`` console script: ``serve`` goes to the server before typer loads.

A restarted server is down until it listens, so its start is part of every recovery
figure; typer (with the pydantic it imports) is ~115 ms of that start. ``rtbench
serve`` is therefore parsed by ``reference_server.launch`` and every other command by
the typer app in ``rtbench.cli``.
"""

from __future__ import annotations

import sys


def run() -> None:
    if sys.argv[1:2] == ["serve"]:
        from reference_server.launch import leave, main

        leave(main(sys.argv[2:]))
    from rtbench.cli import run as cli

    cli()
