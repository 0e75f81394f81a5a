"""Methods found by name: every module of ``brainuad.models`` that lists :class:`~brainuad.models.base.Method`
instances in ``METHODS``, methods installed by other packages under the ``brainuad.models`` entry-point group, and
methods :func:`register`-ed at run time (a plug-in, a test)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from pathlib import Path
from typing import TYPE_CHECKING

from brainuad.errors import ConfigError

if TYPE_CHECKING:
    from brainuad.models.base import Method

#: Modules of this package that are not methods.
_NOT_METHODS = {"base", "registry", "layers"}
_METHODS: dict[str, Method] = {}
_LOADED = False
_LOADING = False


def _load() -> dict[str, Method]:
    global _LOADED, _LOADING
    if not _LOADED and not _LOADING:
        _LOADING = True  # a method module that looks a method up while it is imported must not recurse
        try:
            for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
                if info.name not in _NOT_METHODS:
                    for method in getattr(importlib.import_module(f"{__package__}.{info.name}"), "METHODS", ()):
                        register(method)
            _load_entry_points()
            _LOADED = True
        except BaseException:
            _METHODS.clear()  # nothing half-filled: the next lookup tries again and meets the same error
            raise
        finally:
            _LOADING = False
    return _METHODS


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group="brainuad.models"):
        for method in entry.load():
            register(method)


def register(method: Method) -> Method:
    """Add a method (its name must be new; its option fields must not clash with another method's).

    Raises:
        ValueError: A name already taken, or an option field another method declares differently.
    """
    if not method.name or (method.name in _METHODS and _METHODS[method.name] is not method):
        raise ValueError(f"model name {method.name!r} is empty or already registered")
    mine = _option_fields(method)
    for other in _METHODS.values():
        for name, declared in _option_fields(other).items():
            if name in mine and mine[name] != declared:
                raise ValueError(f"{method.name}: option {name!r} clashes with {other.name}'s (one CLI flag each)")
    _METHODS[method.name] = method
    return method


def _option_fields(method: Method) -> dict[str, tuple]:
    """Option name → (resolved type, default): one CLI flag serves every method declaring the same setting."""
    hints = typing.get_type_hints(method.Options)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(method.Options)}


def unregister(name: str) -> None:
    """Remove a method added with :func:`register` (tests)."""
    _METHODS.pop(name, None)


def get_method(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        ConfigError: No such method (the message lists the registered ones).
    """
    methods = _load()
    if name not in methods:
        raise ConfigError(f"model.kind {name!r} is not a registered model; known: {', '.join(sorted(methods))}")
    return methods[name]


def method_names() -> list[str]:
    """Every registered method's name, the package's in module order."""
    return list(_load())


def methods() -> list[Method]:
    """Every registered method."""
    return list(_load().values())
