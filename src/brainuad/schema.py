"""Frozen dataclasses ⇄ JSON, strictly: unknown keys are rejected and wrong types are reported with their dotted
path, so a hand-edited or foreign config never loads half-right."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from brainuad.errors import ConfigError

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain JSON-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: Any, *, where: str = "") -> T:
    """Build config dataclass ``cls`` from JSON data, strictly.

    Missing keys take their defaults; unknown keys and wrong types raise :class:`ConfigError` naming the key.
    """
    name = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    kwargs = {key: _coerce(hints[key], value, f"{name}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:  # a section whose type depends on another field (model.options): its owner validates it
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} matches none of {options}")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` that validates the new values like :func:`from_dict` (for CLI overrides)."""
    data = to_dict(obj)
    if "options" in data and changes.get("kind", data.get("kind")) != data.get("kind") and "options" not in changes:
        data.pop("options")  # another model kind: its own default settings, not the old kind's
    data.update({k: to_dict(v) for k, v in changes.items()})
    return from_dict(type(obj), data)
