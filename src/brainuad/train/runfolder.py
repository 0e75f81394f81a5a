"""A training run folder: its split, its log, its summary, its safety — one trainer at a time (a lock), the
settings a resume may not change, and case paths that hold from any working directory."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from brainuad.config import Config
from brainuad.errors import BrainuadError, InputError
from brainuad.io.files import write_json

LOG_FIELDS = ("epoch", "train_loss", "val_loss", "seconds", "volumes_per_s", "lr")

#: Training settings that change how a run executes, not what it learns: a resumed run takes them as given.
EXECUTION_SETTINGS = ("compile", "checkpoint_minutes")


def resume_differences(saved: Config, given: Config) -> list[str]:
    """Model, training and post-processing settings of ``given`` that differ from a run's ``saved`` config (the epoch
    budget, the input shape taken from the data, and how the run executes — compile, checkpoint interval — excepted),
    as ``section.field: run X, given Y``."""
    from brainuad.config import to_dict

    old, new = to_dict(saved), to_dict(given)
    ignored = {("training", k) for k in EXECUTION_SETTINGS} | {("training", "epochs"), ("model", "input_shape")}
    return [
        f"{section}.{key}: run {old[section][key]!r}, given {new[section].get(key)!r}"
        for section in ("model", "training", "postprocessing")
        for key in old[section]
        if (section, key) not in ignored and old[section][key] != new[section].get(key)
    ]


#: ``split.json``'s ``paths`` when its case folders are written relative to the run folder (older runs: absolute, or
#: relative to the working directory the run was started in).
RELATIVE_TO_RUN = "relative to the run folder"


#: ``split.json``'s record of each case's input (the sha256 of the raw scan it was preprocessed from), per part, in
#: the order of the part's entries: the run's training scans are still recognised when its paths no longer resolve.
INPUT_HASHES = "input_sha256"


def input_digest(folder: str | Path) -> str | None:
    """The sha256 of the raw scan a preprocessed case folder came from (its ``record.json``: ``input.sha256``), or
    ``None`` when the folder or that field is missing or malformed."""
    from brainuad.io.volumes import read_json

    try:
        digest = (read_json(Path(folder) / "record.json").get("input") or {}).get("sha256")
    except (OSError, ValueError, AttributeError, TypeError, BrainuadError):
        return None
    return digest if isinstance(digest, str) and digest else None


def portable_split(split: dict, run_dir: Path) -> dict:
    """The split as ``split.json`` holds it: case folders relative to the run folder (no absolute path of this
    machine; a run folder moved together with its data still resumes), and each case's input sha256 (a run folder
    moved without its data still knows which scans it was trained on)."""
    from brainuad.io.portable import relative_path

    fixed = {**split, "paths": RELATIVE_TO_RUN}
    for part in ("train", "val"):
        fixed[part] = [relative_path(p, run_dir) for p in split.get(part, [])]
    fixed[INPUT_HASHES] = {part: [input_digest(p) for p in split.get(part, [])] for part in ("train", "val")}
    return fixed


def split_folders(split: dict, part: str, run_dir: str | Path) -> list[Path]:
    """The case folders of one part (``train``, ``val``) of a run's ``split.json``, as paths from here (entries of
    any version: relative to the run folder, absolute, or as written)."""
    from brainuad.io.portable import resolve_relative

    relative = split.get("paths") == RELATIVE_TO_RUN
    return [resolve_relative(e, run_dir) if relative else Path(e) for e in split.get(part, [])]


def split_identities(split: dict, part: str, run_dir: str | Path) -> tuple[set[Path], set[str], list[str]]:
    """What identifies the scans of one part of a run's ``split.json``: their case folders found from here
    (resolved), their input sha256s (recorded in the split, or read from the folders found), and the entries that
    are neither found nor hashed (a run folder moved without its data, from an older version): scans no check can
    recognise, which the caller must report rather than pass over."""
    entries = split.get(part, []) if isinstance(split.get(part), list) else []
    recorded = split.get(INPUT_HASHES)
    hashes = recorded.get(part) if isinstance(recorded, dict) else None
    if not isinstance(hashes, list) or len(hashes) != len(entries):
        hashes = [None] * len(entries)
    paths: set[Path] = set()
    digests: set[str] = set()
    unchecked: list[str] = []
    for entry, folder, digest in zip(entries, split_folders({**split, part: entries}, part, run_dir), hashes):
        found = folder.is_dir()
        if found:
            paths.add(folder.resolve())
        digest = digest if isinstance(digest, str) and digest else (input_digest(folder) if found else None)
        if digest:
            digests.add(digest)
        elif not found:
            unchecked.append(str(entry))
    return paths, digests, unchecked


def absolute_split(split: dict, run_dir: Path) -> dict:
    """The split with absolute case paths (in memory only: ``split.json`` holds them relative to the run folder);
    older runs stored them absolute, or relative to the working directory of the run."""
    import os

    real_run = Path(os.path.realpath(run_dir))  # entries are relative to the run folder's real place (symlinks)
    fixed = dict(split)
    for part in ("train", "val"):
        paths = []
        for entry in split.get(part, []):
            path = Path(entry)
            if split.get("paths") == RELATIVE_TO_RUN and not path.is_absolute():
                path = real_run / path
                if not path.is_dir():
                    raise InputError(
                        run_dir / "split.json",
                        f"case folder {entry} (relative to the run folder) is not found: the run folder was moved "
                        "without its training data — move it back beside them to resume",
                    )
            elif not path.is_absolute():
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
    fixed.pop("paths", None)
    fixed.pop(INPUT_HASHES, None)
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


def make_split(cases: list[Path], val_fraction: float, seed: int) -> dict:
    """Random train/validation split of case folders (validation gets at least one case when there are two)."""
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = round(len(cases) * val_fraction) if len(cases) > 1 else 0
    if val_fraction > 0 and len(cases) > 1:
        n_val = max(1, n_val)
    val = sorted(str(cases[i]) for i in order[:n_val])
    train = sorted(str(cases[i]) for i in order[n_val:])
    note = None
    if not val:
        note = "one healthy case only: validation uses the training case (no held-out estimate)"
        val = list(train)
    return {"seed": seed, "val_fraction": val_fraction, "train": train, "val": val, "note": note}


def prepare_run(
    case_folders: list[Path],
    run_dir: Path,
    config: Config,
    resume: bool,
    given: Config | None = None,
    val_folders: list[Path] | None = None,
) -> tuple[Config, dict]:
    """The run's config and split: a new run's (drawn, or the given validation cases), or, to resume, the saved
    ones (refusing settings that differ from the run's, the epoch budget and execution settings excepted)."""
    from brainuad.config import replace
    from brainuad.io.volumes import read_json
    from brainuad.train.checkpoints import load_config

    config_path = run_dir / "config.json"
    if resume:
        if not config_path.is_file():
            raise InputError(run_dir, "nothing to resume: no config.json in this run folder")
        saved = load_config(config_path)
        # Only the epoch budget may change on resume; everything else must match what the weights were made with.
        differ = resume_differences(saved, given) if given is not None else []
        if differ:
            raise BrainuadError(
                f"{config_path}: --resume with settings that differ from the run's ({'; '.join(differ)}); only the "
                "epoch budget may change — drop those flags or start a new run"
            )
        kept = {k: getattr(config.training, k) for k in ("epochs", *EXECUTION_SETTINGS)}
        config = replace(saved, training=replace(saved.training, **kept))
        return config, absolute_split(read_json(run_dir / "split.json"), run_dir)
    if config_path.exists():
        raise BrainuadError(f"{run_dir}: already holds a run; pass --resume to continue it or choose a new --out")
    # Absolute paths: the run resumes, calibrates and is evaluated from any working directory.
    if val_folders:
        both = sorted({str(p.resolve()) for p in case_folders} & {str(p.resolve()) for p in val_folders})
        if both:
            raise BrainuadError(f"cases given both for training and for validation: {', '.join(both[:5])}")
        split = {
            "seed": config.training.seed,
            "val_fraction": None,
            "train": sorted(str(p.resolve()) for p in case_folders),
            "val": sorted(str(p.resolve()) for p in val_folders),
            "note": "validation cases given with --val-data",
        }
        return config, split
    split = make_split([p.resolve() for p in case_folders], config.training.val_fraction, config.training.seed)
    return config, split


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) if k != "epoch" else int(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def resume_log(path: Path, epoch: int, rewrite: bool = True) -> list[dict]:
    """The log up to the checkpoint being resumed from; rows of later epochs (to be run again) are dropped."""
    rows = read_log(path)
    kept = [row for row in rows if row["epoch"] <= epoch]
    if rewrite and len(kept) != len(rows):
        from brainuad.io.volumes import atomic_path

        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(kept)
    return kept


def append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


#: Remaining training time (s) above which the first epoch's pace is reported, with the faster alternatives.
LONG_RUN_S = 3600.0


def warn_if_long(run_dir: Path, epoch: int, epochs_left: int, epoch_s: float, device) -> None:
    """Say how long the run will take, when that is over :data:`LONG_RUN_S` (called once, after one epoch).

    Args:
        run_dir: The run folder (named in the warning).
        epoch: The epoch just finished, whose pace predicts the rest.
        epochs_left: Epochs still to run.
        epoch_s: Seconds that epoch took (its validation included, as the others').
        device: The :class:`torch.device` training runs on (on a CPU, the warning names the faster alternatives).
    """
    left = epochs_left * epoch_s
    if left <= LONG_RUN_S:
        return
    advice = (
        "; on a CPU, `--recipe quick` learns healthy anatomy in minutes (README: 'Quick CPU recipe'), or train on a GPU"
        if device.type == "cpu"
        else ""
    )
    warnings.warn(
        f"{run_dir}: epoch {epoch} took {epoch_s:.0f} s: the {epochs_left} epochs left take about {left / 3600:.1f} h "
        f"on {device.type}{advice}. Ctrl-C stops the run; --resume continues it from its last checkpoint",
        RuntimeWarning,
        stacklevel=3,
    )


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_summary(
    run_dir: Path,
    parameters: int,
    state: dict,
    history: list[dict],
    world: int,
    in_sync: bool | None,
    check: dict | None = None,
) -> None:
    """``summary.json`` (epochs, losses, costs, the learned-nothing check) and the loss curve of a finished run.

    Args:
        run_dir: The run folder.
        parameters: The model's trainable parameters.
        state: ``epoch``, ``best_epoch`` and ``best_val_loss`` as the loop ended.
        history: The log rows (one per epoch).
        world: Processes that trained (DDP world size).
        in_sync: Whether the DDP ranks ended with identical weights (``None``: not checked).
        check: The learned-nothing guard's result (:func:`brainuad.train.guard.reconstruction_check`).
    """
    from brainuad.report.figures import plot_loss_curve

    if history:
        plot_loss_curve(history, run_dir / "loss_curve.png")
    write_json(
        run_dir / "summary.json",
        {
            "epochs_done": state["epoch"],
            "best_epoch": state["best_epoch"],
            "best_val_loss": state["best_val_loss"],
            "last_train_loss": history[-1]["train_loss"] if history else None,
            "parameters": parameters,
            "train_seconds": round(sum(r["seconds"] for r in history), 2),
            # Process CPU time (all threads, data loading included): on a shared machine, the honest cost.
            "process_cpu_seconds": round(_cpu_seconds(), 1),
            "world_size": world,
            "ddp_ranks_in_sync": in_sync,
            "reconstruction_check": check,
        },
    )
