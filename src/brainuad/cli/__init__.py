"""The ``brainuad`` command: thin verbs over documented functions; heavy imports happen inside each verb.

One module per group of verbs (:mod:`~brainuad.cli.data`, :mod:`~brainuad.cli.train`, :mod:`~brainuad.cli.apply`,
:mod:`~brainuad.cli.bids`, :mod:`~brainuad.cli.more`); their flags come from the config dataclasses
(:mod:`~brainuad.cli.flags`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from brainuad import __version__
from brainuad.cli.apply import _add_calibrate, _add_detect, _add_evaluate
from brainuad.cli.bids import _add_bids
from brainuad.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    LOGGER,
    logging_to_stderr,
    verbosity_from_argv,
)
from brainuad.cli.data import _add_download, _add_preprocess
from brainuad.cli.export import _add_export
from brainuad.cli.more import _add_demo, _add_models
from brainuad.cli.train import _add_ablate, _add_train

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

log = logging.getLogger(__name__)


def build_parser(methods: bool = True) -> argparse.ArgumentParser:
    """The argument parser with every verb (exposed for documentation and tests); ``methods=False`` leaves out the
    models' own settings (their flags need the models, hence torch, imported)."""
    parser = argparse.ArgumentParser(
        prog="brainuad",
        description="Unsupervised anomaly detection in brain MRI (after Luo et al.). A research tool, not a "
        "medical device.",
    )
    parser.add_argument("--version", action="version", version=f"brainuad {__version__}")
    # Before the verb (brainuad -v train …): after it, --quiet is the verb's own (no progress bar).
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", dest="verbosity", action="store_const", const="debug", default=None,
        help="debug messages too (give it before the verb: brainuad -v train ...)",
    )  # fmt: skip
    loudness.add_argument(
        "-q", "--quiet", dest="verbosity", action="store_const", const="quiet",
        help="warnings and errors only, and no progress bars (before the verb; a verb's own --quiet only hides "
        "its progress bar)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_preprocess(sub)
    _add_download(sub)
    _add_train(sub, methods)
    _add_calibrate(sub)
    _add_detect(sub)
    _add_evaluate(sub)
    _add_bids(sub)
    _add_ablate(sub, methods)
    _add_demo(sub)
    _add_models(sub)
    _add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainuad`` console script; returns the exit code. Log records of the ``brainuad``
    logger go to stderr while it runs (``-v``: debug too; ``-q``: warnings only); the library itself configures none."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    with logging_to_stderr(verbosity_from_argv(argv), command):
        return _main(argv, command)


def _main(argv: list[str], command: str | None) -> int:
    from brainuad.errors import BrainuadError

    parser = build_parser(methods=command in ("train", "ablate"))
    args = parser.parse_args(argv)
    args.argv = argv
    if args.verbosity is not None:
        # As parsed (argparse also accepts abbreviations, --verb, which the reading before parsing does not know).
        logging.getLogger(LOGGER).setLevel(logging.DEBUG if args.verbosity == "debug" else logging.WARNING)
    if args.verbosity == "quiet" and hasattr(args, "quiet"):
        args.quiet = True  # the global -q silences the verb's progress bars too
    if log.isEnabledFor(logging.DEBUG):
        import platform

        from brainuad.io.provenance import git_hash

        log.debug("brainuad %s (git %s), Python %s: %s", __version__, git_hash(), platform.python_version(), argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    import signal

    def terminate(signum, frame):
        raise KeyboardInterrupt  # unwinds like Ctrl-C: staging folders are removed, workers stopped

    previous = signal.signal(signal.SIGTERM, terminate) if _in_main_thread() else None
    import warnings

    from brainuad.errors import warning_formatter

    format_before = warnings.formatwarning
    warnings.formatwarning = warning_formatter(args.command)
    try:
        return args.func(args)
    except BrainuadError as exc:
        print(f"brainuad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"brainuad {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = format_before
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
