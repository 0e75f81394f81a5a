"""What every verb shares: exit codes, early input checks (before torch is imported), usage errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODEL_HELP = "a trained model folder, or builtin:NAME for a model shipped with brainuad (see 'brainuad models')"


def check_exist(paths: Sequence[str], what: str = "file or folder") -> None:
    """Fail fast, before torch and friends are imported (seconds), when an input path does not exist."""
    from brainuad.errors import InputError

    for path in paths:
        if not os.path.exists(path):
            raise InputError(path, f"{what} not found")


def check_model_folder(path: str) -> None:
    from brainuad.errors import InputError

    if path.startswith("builtin:"):
        return  # a shipped model: resolved (with a clear error for unknown names) where it is loaded
    check_exist([path], "model folder")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise InputError(path, "not a brainuad model folder (no config.json): pass the folder 'brainuad train' wrote")


def config_choices(name: str) -> list[str]:
    """The allowed values of a config setting (``device``, ``skull_strip``), declared once in :mod:`brainuad.config`."""
    from brainuad.cli.flags import choices_of
    from brainuad.config import PreprocessConfig, TrainConfig

    return choices_of(TrainConfig if name == "device" else PreprocessConfig, name)


def device_from_flag(name: str):
    """The ``--device`` word resolved once, here at the CLI's edge, into the torch.device every API receives."""
    from brainuad.train.device import resolve_device

    return resolve_device(name)


def report_batch(verb: str, result, out: str) -> int:
    """Print a batch's counts and each failure (with its file); exit code 1 if any scan failed."""
    # A run that wrote nothing removes the --out it created: do not point at a folder that is not there.
    where = f"-> {out}" if Path(out).exists() else f"(nothing written; {out} not created)"
    print(
        f"{verb}: {len(result.done)} done, {len(result.skipped)} already finished, {len(result.failed)} failed {where}"
    )
    for _path, message in result.failed:
        print(f"  failed: {message}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def usage_error(message: str) -> int:
    print(f"brainuad: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def add_device_flag(p) -> None:
    """``--device`` for the verbs that run a trained model (training takes it from its config section)."""
    p.add_argument(
        "--device", default="auto", choices=config_choices("device"), help="default: auto = CUDA when available"
    )


def add_orientation_flag(p) -> None:
    """``--assume-orientation`` for the verbs that read raw scans (preprocess, detect)."""
    p.add_argument(
        "--assume-orientation",
        metavar="AXCODES",
        default=None,
        help="for scans whose header has no orientation (qform_code = sform_code = 0, refused otherwise): their voxel "
        "axes, as 3 letters from R/L, A/P, S/I (e.g. LPS); outputs keep the input's codes",
    )


SHARD_HELP = (
    "do only shard K of N (0 <= K < N): a fixed partition of the scans, so N jobs can share one output folder; "
    "default inside a SLURM array job: the task's shard (SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT)"
)


def add_shard_flag(p) -> None:
    """``--shard K/N`` for the verbs that work through a batch of scans."""
    p.add_argument("--shard", default=None, metavar="K/N", help=SHARD_HELP)


def shard_from_flag(text: str | None):
    """The ``--shard`` word (or the SLURM array task) as a :class:`~brainuad.io.shards.Shard`, or ``None``."""
    from brainuad.io.shards import parse_shard

    shard = parse_shard(text)
    if shard is not None:
        print(f"shard {shard} (of the scans sorted by output name)", file=sys.stderr)
    return shard
