"""The command-line options of ``render`` and ``search``, generated from the
kinds' parameter dataclasses (see :func:`fracbuild.generators.base.param`).

A flag several kinds take is one option: its help names the kinds that take
it (unless all do) and each kind's default. Every option's click default is
None, so that a command can tell the options the user gave, the only ones
passed to the kind: each kind keeps its own defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import click

from .generators.base import Generator

# Parameters the commands name themselves: a kind's field may not take these names.
RESERVED = frozenset({"kind", "seed"})


def _fields(kinds: Iterable[type[Generator]]) -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Field name -> [(kind, field)] of every kind taking it, in the order
    of the kinds and of their fields. Raises TypeError where two kinds give
    one flag to two names (or one name to two flags)."""
    taken: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    names_of_flag: dict[str, str] = {}
    for kind in kinds:
        for item in dataclasses.fields(kind.Params):
            if "flag" not in item.metadata:
                raise TypeError(f"{kind.kind}: parameter {item.name} has no flag (declare it with param(...))")
            if item.name in RESERVED:
                raise TypeError(f"{kind.kind}: parameter {item.name} clashes with --{item.name}")
            flag = item.metadata["flag"]
            if names_of_flag.setdefault(flag, item.name) != item.name:
                raise TypeError(f"{kind.kind}: {flag} sets {item.name} here, {names_of_flag[flag]} elsewhere")
            entries = taken.setdefault(item.name, [])
            if entries and entries[0][1].metadata["flag"] != flag:
                raise TypeError(f"{kind.kind}: {item.name} is {flag} here, {entries[0][1].metadata['flag']} elsewhere")
            if entries and _value_type(entries[0][1]) != _value_type(item):
                raise TypeError(f"{kind.kind}: {flag} takes {_value_type(item).__name__} here, "
                                f"{_value_type(entries[0][1]).__name__} elsewhere")
            entries.append((kind.kind, item))
    return taken


def _value_type(item: dataclasses.Field) -> type:
    """What the option parses: the declared type, else the default's."""
    if item.metadata.get("choices"):
        return str
    return item.metadata.get("type") or type(item.default)


def param_flags(kinds: Iterable[type[Generator]]) -> dict[str, str]:
    """Parameter name -> the flag the user types (num_classes -> --L)."""
    return {name: entries[0][1].metadata["flag"] for name, entries in _fields(kinds).items()}


def _help_text(metadata: dict[str, Any]) -> str:
    unit = f", {metadata['unit']}" if metadata["unit"] else ""
    return f"{metadata['help']}{unit}."


def _default_text(item: dataclasses.Field) -> str | None:
    """What the help states as the field's default: None for a flag."""
    if isinstance(item.default, bool):
        return None
    value = item.metadata["shown"] if item.default is None else item.default
    return None if value is None else str(value)


def _grouped(pairs: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """[(kind, text)] -> [([kinds], text)], texts in the order first seen."""
    groups: dict[str, list[str]] = {}
    for kind, text in pairs:
        groups.setdefault(text, []).append(kind)
    return [(kinds, text) for text, kinds in groups.items()]


def _option(name: str, entries: list[tuple[str, dataclasses.Field]], every_kind: list[str]) -> click.Option:
    metadata = entries[0][1].metadata
    helps = _grouped([(kind, _help_text(item.metadata)) for kind, item in entries])
    if len(helps) == 1 and len(entries) == len(every_kind):
        help_text = helps[0][1]
    else:
        help_text = " ".join(f"{', '.join(kinds)}: {text}" for kinds, text in helps)
    defaults = _grouped([(kind, text) for kind, item in entries if (text := _default_text(item)) is not None])
    if len(defaults) == 1:
        help_text += f" [default: {defaults[0][1]}]"
    elif defaults:
        help_text += " [default: " + "; ".join(f"{', '.join(kinds)} {text}" for kinds, text in defaults) + "]"
    default = entries[0][1].default
    if isinstance(default, bool):
        return click.Option([metadata["flag"], name], is_flag=True, help=help_text)
    choices = [choice for _, item in entries for choice in item.metadata["choices"] or ()]
    value_type: Any = click.Choice(list(dict.fromkeys(choices))) if choices else _value_type(entries[0][1])
    return click.Option([metadata["flag"], name], type=value_type, default=None, help=help_text)


def kind_options(kinds: list[type[Generator]], *, hide_kind: bool = False,
                 choices: Iterable[str] | None = None) -> Callable:
    """Decorator adding --kind (one of ``choices``, default the names of
    ``kinds``; the first kind is the default), every parameter of ``kinds``
    and --seed to a click command. ``hide_kind``: for a command that shows
    one kind's options (search)."""
    names = [kind.kind for kind in kinds]
    options = [click.Option(["--kind"], default=names[0], show_default=True,
                            type=click.Choice(sorted(choices or names)), hidden=hide_kind,
                            help="Which data set to build.")]
    options += [_option(name, entries, names) for name, entries in _fields(kinds).items()]
    options.append(click.Option(["--seed"], type=int, default=0, show_default=True,
                                help="Root seed of every random draw (recorded in the manifest)."))

    def decorate(function: Callable) -> Callable:
        # click lists a command's options in the reverse of the order they are attached
        function.__click_params__ = [*getattr(function, "__click_params__", []), *reversed(options)]
        return function

    return decorate
