"""Exceptions brainuad raises on purpose: each says which file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class BrainuadError(Exception):
    """Base class for every error brainuad raises deliberately (the CLI turns them into exit code 1)."""


class InputError(BrainuadError):
    """An input file is missing, unreadable, or not a usable brain volume.

    Attributes:
        path: The offending file (``None`` for in-memory data).
        problem: What is wrong, in words a user can act on.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        where = str(self.path) if self.path is not None else "<in-memory volume>"
        super().__init__(f"{where}: {problem}")


class OutputError(BrainuadError):
    """An output cannot be written (folder not writable, disk full, would overwrite an input)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(BrainuadError):
    """A configuration (JSON or CLI flags) does not match the schema."""
