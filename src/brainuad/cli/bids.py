"""The ``bids`` verb: brainuad as a BIDS App (``brainuad bids BIDS_DIR OUTPUT_DIR participant|group``)."""

from __future__ import annotations

import argparse
import sys

from brainuad.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    MODEL_HELP,
    add_device_flag,
    add_shard_flag,
    check_model_folder,
    device_from_flag,
    shard_from_flag,
    usage_error,
)


def _add_bids(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bids",
        help="run on a BIDS dataset and write BIDS derivatives (a BIDS App)",
        description="BIDS App: 'participant' detects anomalies on each selected scan and writes BIDS derivatives "
        "(maps and masks in the scan's own space and in MNI space, JSON sidecars, reports, "
        "dataset_description.json); 'group' writes a table of all scans and an HTML triage page. Nothing is written "
        "inside BIDS_DIR except under BIDS_DIR/derivatives/.",
    )
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="the BIDS dataset (read only)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="derivatives folder, e.g. BIDS_DIR/derivatives/brainuad")
    p.add_argument("analysis_level", choices=["participant", "group"], help="participant or group level")
    p.add_argument(
        "--participant-label", nargs="+", default=None, metavar="LABEL", help="participants to do (default: all)"
    )
    p.add_argument("--session-label", nargs="+", default=None, metavar="LABEL", help="sessions to do (default: all)")
    p.add_argument(
        "--suffix",
        choices=["T1w", "T2w", "FLAIR"],
        default=None,
        help="which scans (default: the contrast the model was trained on)",
    )
    p.add_argument("--model", default="builtin:t2", metavar="RUN_DIR", help=MODEL_HELP + " (default: builtin:t2)")
    p.add_argument(
        "--bids-filter-file",
        default=None,
        metavar="FILE",
        help='JSON entity filters per suffix, as fMRIPrep\'s, e.g. {"t2w": {"acquisition": "fast", "run": "1"}}',
    )
    p.add_argument("--threshold", default="auto", help="'auto' (the calibrated one) or a value")
    add_device_flag(p)
    add_shard_flag(p)
    p.add_argument("--force", action="store_true", help="redo scans whose derivatives are complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_bids)


def _run_bids(args: argparse.Namespace) -> int:
    import math

    try:
        threshold = None if args.threshold == "auto" else float(args.threshold)
    except ValueError:
        return usage_error(f"--threshold must be 'auto' or a number, got {args.threshold!r}")
    if threshold is not None and not math.isfinite(threshold):
        return usage_error(f"--threshold must be a finite number, got {args.threshold!r}")
    from brainuad.bids.layout import check_dataset, check_output_dir

    # Before the seconds-long heavy imports: the dataset, the output folder, the model folder.
    check_output_dir(check_dataset(args.bids_dir), args.output_dir)
    check_model_folder(args.model)
    from brainuad.infer.calibration import check_threshold  # after the input checks: it imports torch

    if threshold is not None and check_threshold(threshold):
        return usage_error(f"--threshold {check_threshold(threshold)}")
    selection = {
        "suffix": args.suffix,
        "participant_labels": args.participant_label,
        "session_labels": args.session_label,
        "filter_file": args.bids_filter_file,
    }
    if args.analysis_level == "group":
        from brainuad.bids.group import run_group

        group = run_group(args.bids_dir, args.output_dir, args.model, **selection)
        print(f"bids group: {len(group.rows)} scans -> {group.table}, {group.page}")
        if group.missing:
            print(f"bids group: {len(group.missing)} selected scan(s) have no participant-level result yet")
        return EXIT_OK
    from brainuad.bids.participant import run_participant

    shard = shard_from_flag(args.shard)
    result = run_participant(
        args.bids_dir,
        args.output_dir,
        args.model,
        **selection,
        shard=shard,
        threshold=threshold,
        device=device_from_flag(args.device),
        force=args.force,
        progress=not args.quiet,
    )
    print(
        f"bids participant: {len(result.done)} done, {len(result.skipped)} already finished, "
        f"{len(result.failed)} failed -> {args.output_dir}"
    )
    for _path, message in result.failed:
        print(f"  failed: {message}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED
