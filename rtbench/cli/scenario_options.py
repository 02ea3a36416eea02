"""The scenario's typer options, generated from the ``Scenario`` struct's knobs.

``rtbench run``, ``rtbench check`` and ``rtbench locust`` offer the scenario fields that
carry a ``Knob`` naming them (``loadtest.scenarios.knobs``), with the knob's flag, short
alias, help text and environment variable. A flag left out is ``None`` (a switch left
off is ``False``), so :func:`overrides` hands ``Scenario.with_overrides`` only what the
person gave. A new knob is one field in the struct.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from loadtest.scenarios import Command, Option, Scenario, cli_options

F = TypeVar("F", bound=Callable[..., Any])


def parameter(option: Option) -> inspect.Parameter:
    """One scenario field as a keyword parameter typer reads as an option."""
    knob = option.knob
    names = [option.flag, *([knob.short] if knob.short else [])]
    annotation: Any
    if option.kind is bool:
        default, annotation = False, bool
    elif option.kind is list:
        default, annotation = None, types.GenericAlias(list, option.item) | None
    else:
        default, annotation = None, option.kind | None
    return inspect.Parameter(
        option.field,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, *names, help=knob.help, envvar=knob.envvar),
        annotation=annotation,
    )


def parameters(command: Command) -> list[inspect.Parameter]:
    """``command``'s scenario options, in the struct's order."""
    return [parameter(option) for option in cli_options(command)]


def overrides(flags: dict[str, Any], command: Command) -> dict[str, Any]:
    """``command``'s scenario fields among ``flags``, for ``Scenario.with_overrides``:
    ``None`` where not given (a switch left off, a repeatable flag never given)."""
    given = {}
    for option in cli_options(command):
        value = flags.get(option.field)
        given[option.field] = (value or None) if option.kind in (bool, list) else value
    return given


def own_parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    """A command's options beside the scenario's: neither its first parameter (SCENARIO)
    nor a ``Scenario`` field; keyword-only, to follow other options."""
    _, *rest = inspect.signature(func, eval_str=True).parameters.values()
    keyword = inspect.Parameter.KEYWORD_ONLY
    return [p.replace(kind=keyword) for p in rest if p.name not in Scenario.__struct_fields__]


def with_scenario_options(command: Command) -> Callable[[F], F]:
    """Give a command function ``command``'s scenario options after its first parameter.

    The function takes them as ``**knobs`` (keyed by field name); typer reads the
    signature this writes.
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        first, *rest = signature.parameters.values()
        if not rest or rest[-1].kind is not inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{func.__name__} takes the scenario options as **knobs")
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest[:-1]]
        # typer reads the generated signature; a function declares no __signature__ attribute
        func.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[first, *parameters(command), *own]
        )
        return func

    return decorate


__all__ = ["overrides", "own_parameters", "parameter", "parameters", "with_scenario_options"]
