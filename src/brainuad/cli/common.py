"""What every verb shares: exit codes, early input checks (before torch is imported), usage errors, and the one place
where brainuad's log messages are given a destination (:func:`logging_to_stderr`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The package's logger: modules log through ``logging.getLogger(__name__)``, its children.
LOGGER = "brainuad"
log = logging.getLogger(__name__)
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
        log.info("shard %s (of the scans sorted by output name)", shard)
    return shard


def verbosity_from_argv(argv: Sequence[str]) -> int:
    """The log level the global ``-v/--verbose`` and ``-q/--quiet`` (typed before the verb) ask for: DEBUG, INFO
    (neither) or WARNING. Read before the parser is built, so the messages of building it obey them too."""
    level = logging.INFO
    for word in argv:
        if not word.startswith("-"):
            break  # the verb: its own --quiet (no progress bar) is not the global one
        if word in ("-v", "--verbose"):
            level = logging.DEBUG
        elif word in ("-q", "--quiet"):
            level = logging.WARNING
    return level


class _VerbFormatter(logging.Formatter):
    """``brainuad VERB: message`` for information, ``brainuad VERB: warning: message`` (debug, error) otherwise —
    the wording of the CLI's Python warnings and errors."""

    def __init__(self, verb: str | None):
        super().__init__()
        self.prefix = f"brainuad {verb}" if verb else "brainuad"

    def format(self, record: logging.LogRecord) -> str:
        kind = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"{self.prefix}: {kind}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


@contextlib.contextmanager
def logging_to_stderr(level: int, verb: str | None) -> Iterator[None]:
    """For the duration of one command: the ``brainuad`` logger (every module's ``logging.getLogger(__name__)``)
    writes records of ``level`` and above to stderr, worded like the CLI's other messages.

    Only the command line configures logging; the library never does (a program that imports brainuad decides
    where its records go, with ``logging.getLogger("brainuad")``). Everything is restored afterwards, so ``main()``
    called in-process (tests, notebooks) leaves the caller's logging as it found it, root logger included.
    """
    logger = logging.getLogger(LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_VerbFormatter(verb))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # not twice when the caller's root logger has a handler
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
