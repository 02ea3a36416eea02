"""docs/LOADTEST.md's table of scenario flags, written from the ``Scenario`` struct's knobs.

The table sits between two markers in the page; everything else in it is prose. The
flags, their short aliases, help texts, environment variables and the commands that
offer them come from the same ``Knob`` annotations the commands are built from, so the
page cannot drift from ``--help``: tests/test_scenario_options.py fails when it differs.

    python -m loadtest.scenarios.flagtable           # rewrite the table in docs/LOADTEST.md
    python -m loadtest.scenarios.flagtable --check   # exit 1 when it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from loadtest.scenarios import Scenario
from loadtest.scenarios.knobs import EVERY, Option, options_of

BEGIN = "<!-- scenario flags: made by `python -m loadtest.scenarios.flagtable` -->"
END = "<!-- end of scenario flags -->"
PAGE = Path(__file__).resolve().parents[2] / "docs" / "LOADTEST.md"
_VALUE = {int: "N", float: "X", str: "TEXT", list: "TEXT"}
"""What a flag's value is shown as (a switch takes none; a list is one value a flag)."""


def _cell(text: str) -> str:
    """Table-safe: one line, a literal bar escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _row(option: Option, offered: tuple[str, ...]) -> str:
    value = _VALUE.get(option.item or option.kind, "") if option.kind is not bool else ""
    names = [f"`{option.flag}{' ' + value if value else ''}`"]
    if option.knob.short:
        names.append(f"`{option.knob.short}`")
    meaning = option.help
    if option.knob.envvar:
        meaning += f" Environment: `{option.knob.envvar}`."
    where = ", ".join(c for c in EVERY if c in offered)
    return f"| {', '.join(names)} | {_cell(meaning)} | {where} |"


def flag_table() -> str:
    """The table, every scenario flag of any command in the struct's order."""
    offered: dict[str, tuple[str, ...]] = {}
    options: dict[str, Option] = {}
    for command in EVERY:
        for option in options_of(Scenario, command):
            options.setdefault(option.field, option)
            offered[option.field] = (*offered.get(option.field, ()), command)
    lines = ["| flag | meaning | commands |", "|---|---|---|"]
    lines += [_row(option, offered[field]) for field, option in options.items()]
    return "\n".join(lines)


def rewrite(page: str) -> str:
    """``page`` with the text between the markers replaced by the table as it is now."""
    head, found, rest = page.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError(f"the page has no {BEGIN!r} ... {END!r} block")
    return f"{head}{BEGIN}\n{flag_table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = PAGE.read_text()
    fresh = rewrite(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{PAGE}: the scenario flag table is out of date; run {__spec__.name}")
            return 1
        return 0
    if fresh != text:
        PAGE.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
