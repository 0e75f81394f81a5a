"""``export``: a trained run as a model folder to share (:func:`brainuad.io.export.export_model`)."""

from __future__ import annotations

import argparse

from brainuad.cli.common import EXIT_OK, check_model_folder


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained run as a model folder to share (weights, config, calibration, card)",
        description="Write RUN (a trained, calibrated run folder or builtin:NAME) as a new model folder OUT: "
        "model.safetensors, config.json, calibration.json (with any file it names), summary.json and MODEL_CARD.md "
        "(the run's, or one written from what the run records). No scans, no caches, no split and no absolute "
        "paths. OUT must not exist or be empty; then '--model OUT' works with detect, evaluate and bids.",
    )
    p.add_argument("run", metavar="RUN", help="trained run folder or builtin:NAME")
    p.add_argument("out", metavar="OUT", help="the model folder to write (new or empty)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    check_model_folder(args.run)
    from brainuad.io.export import export_model

    out = export_model(args.run, args.out)
    print(f"export: wrote {out} (use it with --model {out})")
    return EXIT_OK
