"""A training run folder's safety: one trainer at a time (a lock), the settings a resume may not change, and case
paths that hold from any working directory."""

from __future__ import annotations

from pathlib import Path

from brainuad.config import Config
from brainuad.errors import BrainuadError, InputError

#: Training settings that change how a run executes, not what it learns: a resumed run takes them as given.
EXECUTION_SETTINGS = ("compile", "checkpoint_minutes")


def resume_differences(saved: Config, given: Config) -> list[str]:
    """Model and training settings of ``given`` that differ from a run's ``saved`` config (the epoch budget, the
    input shape taken from the data, and how the run executes — compile, checkpoint interval — excepted), as
    ``section.field: run X, given Y``."""
    from brainuad.config import to_dict

    old, new = to_dict(saved), to_dict(given)
    ignored = {("training", k) for k in EXECUTION_SETTINGS} | {("training", "epochs"), ("model", "input_shape")}
    return [
        f"{section}.{key}: run {old[section][key]!r}, given {new[section].get(key)!r}"
        for section in ("model", "training")
        for key in old[section]
        if (section, key) not in ignored and old[section][key] != new[section].get(key)
    ]


def absolute_split(split: dict, run_dir: Path) -> dict:
    """The split with absolute case paths; older runs stored them relative to the working directory of the run."""
    fixed = dict(split)
    for part in ("train", "val"):
        paths = []
        for entry in split.get(part, []):
            path = Path(entry)
            if not path.is_absolute():
                found = [c for c in (path, run_dir / path) if c.is_dir()]
                if not found:
                    raise InputError(
                        run_dir / "split.json",
                        f"case folder {entry} is not found from here ({Path.cwd()}): this older run stored paths "
                        "relative to the folder it was started in — resume from there",
                    )
                path = found[0]
            paths.append(str(path.resolve()))
        fixed[part] = paths
    return fixed


def lock_run_folder(run_dir: Path):
    """Hold an exclusive lock on the run folder (released when the process ends): two trainings into one folder
    would interleave their logs and overwrite each other's weights and cache.

    Raises:
        BrainuadError: Another process holds the lock.
    """
    import fcntl

    key = run_dir.resolve()
    if key in _RUN_LOCKS:  # this process holds it already (train called again on the same run)
        return _RUN_LOCKS[key]
    handle = open(run_dir / ".train.lock", "a+")  # noqa: SIM115 (kept open for the lock's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise BrainuadError(
            f"{run_dir}: another 'brainuad train' is using this run folder; wait for it or choose another --out"
        ) from None
    _RUN_LOCKS[key] = handle
    return handle


_RUN_LOCKS: dict[Path, object] = {}
