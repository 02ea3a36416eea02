"""``rtbench serve``: run the reference realtime server.

The flags are parsed by ``reference_server.launch`` (argparse), not by typer: the
server's start time is part of every recovery figure, and typer's import costs ~115 ms
of it (reference_server/launch.py says how it was measured). The console script
(``rtbench.entry``) sends ``rtbench serve ...`` there before typer is imported; this
command only lists ``serve`` in ``rtbench --help`` and forwards when the typer app is
called in-process.
"""

from __future__ import annotations

import typer

from reference_server.launch import DESCRIPTION, SUMMARY, main


def register(app: typer.Typer) -> None:
    app.command(
        "serve",
        help=DESCRIPTION,
        short_help=SUMMARY,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(serve)


def serve(ctx: typer.Context) -> None:
    raise typer.Exit(main(ctx.args))
