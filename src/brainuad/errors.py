"""Exceptions brainuad raises on purpose: each says which file and what is wrong with it; and how warnings read."""

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

    def __reduce__(self):
        # Rebuilt from its own arguments: an error raised in a worker process (--jobs) reaches the parent whole
        # (the default pickling passes the message alone, which breaks the pool and every scan after it).
        return (type(self), (self.path, self.problem))


class OutputError(BrainuadError):
    """An output cannot be written (folder not writable, disk full, would overwrite an input)."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class ConfigError(BrainuadError):
    """A configuration (JSON or CLI flags) does not match the schema."""


#: The installed package's folder: warnings raised by its own code are worded as its own.
PACKAGE = Path(__file__).resolve().parent


def warning_formatter(command: str):
    """A ``warnings.formatwarning`` that reads "brainuad COMMAND: warning: …" (one line, no file:line, no source).

    Set as ``formatwarning`` rather than ``showwarning``, so that filters and ``catch_warnings(record=True)`` keep
    working. Warnings from other libraries name their category and origin.

    Args:
        command: The verb the user ran (``preprocess``, ``train``, …).
    """

    def format_warning(message, category, filename, lineno, line=None) -> str:
        ours = category.__module__.startswith("brainuad") or Path(filename).resolve().is_relative_to(PACKAGE)
        origin = "" if ours else f" ({category.__name__} from {Path(filename).name}:{lineno})"
        return f"brainuad {command}: warning{origin}: {message}\n"

    format_warning.brainuad_command = command  # worker processes install the same (preprocessing._worker_init)
    return format_warning
