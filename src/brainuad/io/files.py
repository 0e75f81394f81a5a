"""Files and folders brainuad writes: atomically (a reader never sees half a file, a killed run never leaves half a
folder), readable by the group as the umask says, and never replacing a folder brainuad did not write; JSON in and
out with errors naming the file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from brainuad.errors import InputError, OutputError


def _clean_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")


def is_safe_name(name: str) -> bool:
    """Whether ``name`` is a folder name that stays inside its parent (what :func:`safe_name` keeps as it is, any
    length)."""
    return name not in ("", ".", "..") and name == _clean_name(name)


#: Longest output folder name a user may choose: ``.NAME.partial-XXXXXXXX`` must fit the usual 255-byte limit.
MAX_USER_NAME = 200
#: Longest folder name :func:`safe_name` gives: room left for the suffixes brainuad adds (``.partial-…``, ``.lock``)
#: within the usual 255-byte limit of a file name.
MAX_NAME = 100


def safe_name(name: str) -> str:
    """A folder name that stays inside its parent: letters, digits and ``._+-`` only, no leading dots, at most
    :data:`MAX_NAME` characters.

    Output folders are named after input files and CSV entries; a name like ``..`` or ``a/../../b`` must never
    reach the file system as a path, and a long one must leave room for brainuad's suffixes (a longer name keeps its
    start and gets a tag of the whole name, so two long names stay apart).
    """
    cleaned = _clean_name(name)
    if len(cleaned) > MAX_NAME:
        import hashlib

        cleaned = cleaned[: MAX_NAME - 13] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return cleaned or "scan"


def ensure_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed; a clear :class:`OutputError` if that fails or it is not writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create output folder ({exc.strerror or exc})") from exc
    if not os.access(folder, os.W_OK):
        raise OutputError(folder, "output folder is not writable")


@contextlib.contextmanager
def output_folder(folder: str | Path) -> Iterator[Path]:
    """Create a run's output ``folder`` (and its missing parents) for the ``with`` block; if the run leaves it empty
    (every scan refused), remove again the folders it created.

    A refused run leaves nothing it created behind. Only empty folders this call created are removed (``rmdir``
    never removes contents), so a folder the user had before, empty or not, and anything another run wrote into
    it meanwhile, stay.

    Raises:
        OutputError: ``folder`` cannot be created or is not writable.
    """
    folder = Path(folder)
    created = []  # deepest first
    probe = folder.absolute()
    while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
        created.append(probe)
        probe = probe.parent
    try:
        ensure_writable_folder(folder)
        yield folder
    finally:
        for path in created:
            try:
                path.rmdir()
            except OSError:  # not empty (outputs, or another run's) or gone: keep it and the folders above it
                break


def walk(folder: str | Path) -> list[Path]:
    """Every file and folder below ``folder``, sorted, following symlinked folders.

    ``Path.rglob`` does not enter a symlinked folder, so a case folder linked into a cases folder (a common way to
    assemble a test set without copying scans) was not found. Each real folder is entered and listed once, so a
    link that points back up ends instead of looping.
    """
    folder = Path(folder)
    found: list[Path] = []
    seen = {os.path.realpath(folder)}
    for root, dirs, files in os.walk(folder, followlinks=True):
        # A folder already entered through another path (a link loop, two links to one case) is left out: its
        # scans would count twice.
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            if real not in seen:
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        found.extend(Path(root) / name for name in kept)
        found.extend(Path(root) / name for name in files)
    return sorted(found)


#: Every folder brainuad builds with :func:`atomic_folder` holds this file; only such folders are ever replaced.
OWNER_MARKER = ".brainuad-output"


def check_replaceable(folder: str | Path, legacy: tuple[str, ...] = ()) -> None:
    """Refuse (naming it) an existing ``folder`` that brainuad did not write: replacing it would lose the user's files.

    Args:
        folder: Output folder about to be replaced.
        legacy: File names an older brainuad wrote without the marker; a folder holding only these is also ours.

    Raises:
        OutputError: ``folder`` exists and is not a brainuad output.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink():
        entries = {p.name for p in folder.iterdir()}
        if not entries or OWNER_MARKER in entries or (legacy and entries <= set(legacy)):  # empty: nothing lost
            return
    raise OutputError(
        folder,
        "already exists and was not written by brainuad (it holds other files); refusing to replace it — "
        "move it or choose another --out",
    )


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``os.umask`` can only swap it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_folder(folder: str | Path, legacy: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a staging folder beside ``folder``; on success it replaces ``folder``, on failure it is deleted.

    A killed process leaves only a hidden ``.<name>.partial-*`` folder, never a half-written ``folder``. An existing
    ``folder`` is replaced only when brainuad wrote it (see :func:`check_replaceable`).
    """
    folder = Path(folder)
    if not is_safe_name(folder.name):
        raise OutputError(folder, "unsafe output folder name (it could point outside its parent folder)")
    if len(folder.name.encode()) > MAX_USER_NAME:
        raise OutputError(folder, f"output folder name longer than {MAX_USER_NAME} bytes; choose a shorter one")
    check_replaceable(folder, legacy)
    ensure_writable_folder(folder.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    _STAGING.add(staging)
    # mkdtemp makes 0700; outputs are for colleagues too: 0755 under the usual umask, as mkdir would give.
    os.chmod(staging, 0o777 & ~current_umask())
    try:
        yield staging
        (staging / OWNER_MARKER).write_text("written by brainuad; replaced only by brainuad\n")
        for attempt in range(5):
            # Another process may write the same case at the same time: the last complete one wins, whole.
            if folder.exists():
                check_replaceable(folder, legacy)
                shutil.rmtree(folder, ignore_errors=True)
            try:
                os.replace(staging, folder)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 4:
                    raise
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise OutputError(folder, "disk full while writing") from exc
        raise OutputError(folder, f"could not write ({exc.strerror or exc})") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _STAGING.discard(staging)


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock for building the output ``folder`` (a ``flock`` on its parent folder: no lock file is
    left behind).

    Two runs writing into the same output folder at the same time take turns, one scan at a time: the second waits,
    then finds the first one's complete result (and reuses it) instead of computing the same folder beside it. The
    lock is released when the process ends, killed or not; where the file system has no locks, the runs go unlocked
    and the last complete folder wins, whole (:func:`atomic_folder`).
    """
    import fcntl

    parent = Path(folder).parent
    ensure_writable_folder(parent)
    try:
        handle = os.open(parent, os.O_RDONLY)
    except OSError as exc:
        raise OutputError(parent, f"cannot open the output folder ({exc.strerror or exc})") from exc
    try:
        with contextlib.suppress(OSError):  # no locking on this file system (some network mounts)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


#: Staging folders being built now, for a signal handler that must remove them before the process ends.
_STAGING: set[Path] = set()


def remove_staging_folders() -> None:
    """Delete the staging folders this process is building (called when a signal ends it)."""
    for staging in list(_STAGING):
        shutil.rmtree(staging, ignore_errors=True)
        _STAGING.discard(staging)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on failure delete it.

    Readers never see a half-written file, and a crash leaves the old file (or nothing) in place.
    """
    path = Path(path)
    parent = path.parent
    ensure_writable_folder(parent)
    # Keep the full suffix (.nii.gz) so libraries that look at the name pick the right format.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600, and some writers replace the file with their own 0600 one (safetensors writes a
        # temporary file and renames it): give the finished file the mode open() would (0644 under umask 022).
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise OutputError(path, "disk full while writing") from exc
        raise OutputError(path, f"could not write ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: A spreadsheet reads a cell starting with one of these as a formula (``=HYPERLINK(...)`` in a case folder's name).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every text cell that a spreadsheet would run as a formula made inert (a leading ``'``); numbers
    are left alone (``-0.5`` stays a number)."""
    return {k: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_STARTS) else v for k, v in row.items()}


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning parse errors into :class:`InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc
