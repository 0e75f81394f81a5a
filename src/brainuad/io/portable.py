"""Outputs that hold on another machine: paths written relative to the file's own folder, never absolute, and the
cache folder brainuad keeps outside every output.

A run folder, a findings folder or a BIDS derivative moved, copied or shared must not carry the absolute paths of
the machine it was made on (they name users, projects and patients, and break on the next machine). Every path
brainuad writes into a JSON record goes through :func:`relative_path`, and every reader of such a path through
:func:`resolve_relative` (which still accepts the absolute paths older versions wrote).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming brainuad's cache folder (training volume caches); default: the user cache folder.
CACHE_ENV = "BRAINUAD_CACHE_DIR"


def relative_path(path: str | Path, base: str | Path) -> str:
    """``path`` written relative to the folder ``base`` (POSIX separators): portable for as long as both move
    together, and never an absolute path of this machine.

    Both sides are resolved (symlinks followed): a folder reached through a link (``runs -> /scratch/runs``) would
    otherwise get an entry whose ``..`` climbs out of the link's target, not out of the link. ``path``'s own last
    component is kept as named (a scan that is a link, as in a DataLad dataset, keeps its name, not its annex
    object's), which the file system follows the same way from anywhere."""
    path = os.path.abspath(path)
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return Path(os.path.relpath(real, os.path.realpath(base))).as_posix()


def resolve_relative(entry: str | Path, base: str | Path) -> Path:
    """The path a JSON record's ``entry`` names: relative entries are relative to the folder ``base`` (the record's
    folder, resolved as :func:`relative_path` wrote them); absolute ones (written by older versions) are returned as
    they are."""
    path = Path(entry)
    return path if path.is_absolute() else Path(os.path.realpath(base)) / path


def cache_root() -> Path:
    """brainuad's cache folder: ``$BRAINUAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/brainuad``, else
    ``~/.cache/brainuad`` (created by whoever writes into it)."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "brainuad"
