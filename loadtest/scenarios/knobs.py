"""A scenario field's command-line face, written on the field: ``Annotated[T, Knob(...)]``.

The ``Scenario`` struct is the one list of the load's knobs. A field that carries a
``Knob`` is a flag of the commands it names, with the knob's help text everywhere:
``rtbench run`` and ``rtbench check`` (typer options, ``rtbench.cli.scenario_options``),
``rtbench locust`` (the same typer options) and Locust's own argument parser for its web
UI and distributed nodes (``loadtest.locust.options``). A field without one is set in a
scenario file only. :func:`options_of` reads the knobs; it imports no CLI library.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

Command = Literal["run", "check", "locust"]
"""``locust`` is ``rtbench locust`` and, through it, Locust's own parser."""
EVERY: tuple[Command, ...] = ("run", "check", "locust")


@dataclass(frozen=True)
class Knob:
    """How one scenario field is offered on the command line."""

    help: str  # one text for every command (typer's --help, Locust's --help and web UI)
    short: str | None = None  # a one-letter alias, e.g. "-u"
    flag: str | None = None  # the long flag when it is not --field-name (faults: --fault)
    commands: tuple[Command, ...] = EVERY  # the commands that offer it
    envvar: str | None = None  # an environment variable that sets it too
    secret: bool = False  # kept off command lines and out of Locust's web form (needs envvar)

    def __post_init__(self) -> None:
        if self.secret and not self.envvar:
            raise ValueError("a secret knob travels in its environment variable: give envvar")


@dataclass(frozen=True)
class Option:
    """A scenario field as a flag: its name, knob, and the value type a flag reads."""

    field: str
    knob: Knob
    kind: type  # int, float, str or bool (a switch); list for a repeatable flag
    item: type | None = None  # a repeatable flag's item type (list[str]: str)

    @property
    def flag(self) -> str:
        return self.knob.flag or "--" + self.field.replace("_", "-")

    @property
    def help(self) -> str:
        return self.knob.help


def options_of(struct: type, command: Command) -> tuple[Option, ...]:
    """The fields of ``struct`` that ``command`` offers as flags, in the struct's order."""
    hints = typing.get_type_hints(struct, include_extras=True)
    found = []
    for field in struct.__struct_fields__:  # type: ignore[attr-defined]  # a msgspec Struct
        knob = _knob(hints[field])
        if knob is not None and command in knob.commands:
            found.append(_option(field, knob, hints[field]))
    return tuple(found)


def _knob(hint: Any) -> Knob | None:
    if get_origin(hint) is typing.Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Knob)), None)
    return None


def _option(field: str, knob: Knob, hint: Any) -> Option:
    kind = _bare(hint)
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return Option(field, knob, list, _bare(item))
    if kind not in (int, float, str, bool):
        raise TypeError(f"Scenario.{field}: a flag reads int, float, str, bool or a list")
    return Option(field, knob, kind)


def _bare(hint: Any) -> Any:
    """``Annotated[Count | None, Knob(...)]`` -> ``int``: no metadata, no ``None``."""
    while True:
        if get_origin(hint) is typing.Annotated:
            hint = get_args(hint)[0]
        elif get_origin(hint) in (Union, types.UnionType):
            rest = [arg for arg in get_args(hint) if arg is not type(None)]
            if len(rest) != 1:
                raise TypeError(f"a flag reads one type, not {hint}")
            hint = rest[0]
        else:
            return hint


__all__ = ["EVERY", "Command", "Knob", "Option", "options_of"]
