"""Command-line flags made from the config dataclasses: one declaration of each setting, default and choice.

Each field of a config section becomes ``--field-name`` (a few are renamed, e.g. ``model.kind`` → ``--method``); its
help is the "Attributes:" entry of the dataclass's docstring, its choices its ``Literal`` type, its default the
dataclass's (shown in the help). Every flag parses to ``None`` when not given, so a recipe or a saved run supplies
the rest and ``train --resume`` knows which settings were typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

#: Flags named differently from their field.
RENAMED = {("model", "kind"): "--method"}


def field_help(cls: type) -> dict[str, str]:
    """Field name → its description in the class docstring's Google-style "Attributes:" section."""
    doc = cls.__doc__ or ""
    match = re.search(r"^(\s*)Attributes:\s*$", doc, re.MULTILINE)
    if not match:
        return {}
    helps: dict[str, str] = {}
    name, base_indent = None, 0
    for line in doc[match.end() :].splitlines():
        if not line.strip():
            continue
        entry = re.match(r"^\s{4,12}(\w+): (.*)$", line)
        indent = len(line) - len(line.lstrip())
        if entry and (name is None or indent <= base_indent):
            name, base_indent = entry.group(1), indent
            helps[name] = entry.group(2).strip()
        elif name is not None and indent > base_indent:
            helps[name] += " " + line.strip()
        else:
            break
    return {k: v.replace("``", "").replace("%", "%%") for k, v in helps.items()}


def choices_of(cls: type, name: str) -> list:
    """The allowed values of a ``Literal`` field."""
    return list(get_args(get_type_hints(cls)[name]))


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    section: str,
    skip: tuple[str, ...] = (),
    label: str = "",
) -> None:
    """One flag per field of config dataclass ``cls``, stored as ``args.<section>.<field>`` (``None`` = not given).

    Args:
        parser: Where the flags go.
        cls: A frozen config dataclass.
        section: Prefix of the destinations (read back with :func:`given`).
        skip: Fields without a flag.
        label: Prefix of every help text (e.g. the model a method's option belongs to).
    """
    hints, helps = get_type_hints(cls), field_help(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = RENAMED.get((section, field.name), "--" + field.name.replace("_", "-"))
        tp = _unwrap_optional(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        # A None default is described by the field's own help ("None = on CUDA only"): no "(default: None)".
        suffix = "" if default is None else f" (default: {shown})"
        help_text = f"{label}{helps.get(field.name, '')}{suffix}".strip()
        kwargs: dict[str, Any] = {"dest": f"{section}.{field.name}", "default": None, "help": help_text}
        if get_origin(tp) is Literal:
            values = get_args(tp)
            kwargs.update(choices=list(values), type=type(values[0]))
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) is tuple:
            args = get_args(tp)
            kwargs.update(type=args[0], nargs="+" if args[-1] is Ellipsis else len(args), metavar=field.name[0].upper())
        elif tp in (int, float, str):
            kwargs.update(type=tp, metavar=field.name.upper())
        else:
            continue  # a nested section or a value without a command-line form
        parser.add_argument(flag, **kwargs)


def given(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The fields of ``section`` whose flags were given, with their values (tuples for lists)."""
    prefix = section + "."
    return {
        key[len(prefix) :]: tuple(value) if isinstance(value, list) else value
        for key, value in vars(args).items()
        if key.startswith(prefix) and value is not None
    }
