"""Verbs that apply a trained model: ``calibrate``, ``detect`` and ``evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brainuad.cli.common import (
    EXIT_OK,
    MODEL_HELP,
    add_device_flag,
    add_orientation_flag,
    add_shard_flag,
    check_exist,
    check_model_folder,
    config_choices,
    device_from_flag,
    report_batch,
    shard_from_flag,
    usage_error,
)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit the detection threshold on healthy validation scans",
        description="Fit the anomaly threshold (a voxel false-positive rate on healthy scans) and the "
        "healthy slice/scan references; saved as calibration.json in the model folder.",
    )
    p.add_argument("--model", required=True, metavar="RUN_DIR", help=MODEL_HELP)
    p.add_argument(
        "--healthy",
        action="append",
        default=None,
        metavar="DIR",
        help="preprocessed healthy scans the model was not trained on (repeatable; default: the run's own "
        "validation split, as listed in RUN_DIR/split.json)",
    )
    p.add_argument(
        "--labelled",
        action="append",
        default=None,
        metavar="DIR",
        help="labelled tuning cases (BraTS-/MS-style): threshold = best pooled Dice on them, the paper's way; "
        "never the cases you will report (repeatable)",
    )
    p.add_argument(
        "--extent-cases",
        action="append",
        default=None,
        metavar="DIR",
        help="labelled tuning cases on which to choose how far each finding extends (hysteresis below the calibrated "
        "threshold, which stays the level a finding needs); alone, it keeps the existing calibration (repeatable)",
    )
    p.add_argument("--modality", default="t2", help="modality of the labelled case files (default: t2)")
    p.add_argument("--fpr", type=float, default=1e-3, help="healthy voxel false-positive rate (default: 0.001)")
    p.add_argument(
        "--max-healthy-ml",
        type=float,
        default=1.0,
        help="raise the threshold until the healthy scans' median flagged volume (after post-processing) is at most "
        "this many mL; 0 or less = the voxel rate alone (default: 1.0)",
    )
    p.add_argument(
        "--normalise-residual",
        action="store_true",
        help="divide every anomaly map by the healthy scans' voxel-wise spread (saved beside calibration.json), so "
        "that places where healthy brains always differ from the model's output do not dominate the map",
    )
    p.add_argument(
        "--allow-training-scans",
        action="store_true",
        help="accept --healthy scans the model was trained on (its threshold will be too low)",
    )
    add_device_flag(p)
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    if not 0 < args.fpr < 1:
        return usage_error("--fpr must be between 0 and 1")
    check_model_folder(args.model)
    check_exist((args.healthy or []) + (args.labelled or []) + (args.extent_cases or []))
    from brainuad.evaluate.calibrate import calibrate, calibrate_extent, calibrate_on_labelled
    from brainuad.train.guard import banner

    warning = banner(args.model)
    if warning:
        print(f"calibrate: {warning}", file=sys.stderr)
    device = device_from_flag(args.device)
    if args.healthy or not (args.labelled or args.extent_cases):
        # Without --healthy: the run's own validation split (split.json), scans it was not trained on.
        result = calibrate(
            args.model,
            args.healthy,
            args.fpr,
            device=device,
            allow_training_scans=args.allow_training_scans,
            max_healthy_ml=args.max_healthy_ml if args.max_healthy_ml > 0 else None,
            normalise_residual=args.normalise_residual,
        )
        print(
            f"calibrate: threshold {result.threshold:.5g} at healthy voxel FPR {args.fpr} on "
            f"{result.calibrated_on} -> {args.model}/calibration.json"
        )
        for note in result.notes or ():
            print(f"calibrate: note: {note}")
    if args.labelled:
        result = calibrate_on_labelled(args.model, args.labelled, args.modality, device=device, progress=False)
        print(
            f"calibrate: threshold {result.threshold:.5g} = best pooled Dice {result.tuning_dice:.3f} on "
            f"{len(result.tuning_cases)} labelled tuning cases -> {args.model}/calibration.json"
        )
    if args.extent_cases:
        result = calibrate_extent(args.model, args.extent_cases, args.modality, device=device, progress=False)
        print(
            f"calibrate: extent level {result.extent_threshold:.5g} below threshold {result.threshold:.5g} = best "
            f"pooled Dice {result.extent_tuning_dice:.3f} of the delineation on {len(result.extent_tuning_cases)} "
            f"labelled tuning cases -> {args.model}/calibration.json"
        )
    return EXIT_OK


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="find anomalies in raw scans with a trained model",
        description="Anomaly maps, reconstructions and segmentations in each scan's own space and in "
        "MNI crop space, per-slice scores and a summary. Finished scans are skipped; one bad scan does "
        "not stop the batch.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI files or folders")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", default="auto", help="'auto' (the calibrated one) or a value")
    p.add_argument(
        "--skull-strip",
        default=None,
        choices=config_choices("skull_strip"),
        help="override the model's preprocessing setting",
    )
    add_device_flag(p)
    p.add_argument("--force", action="store_true", help="redo scans whose outputs are complete")
    add_shard_flag(p)
    p.add_argument(
        "--allow-contrast-mismatch",
        action="store_true",
        help="run on a scan whose contrast is clearly not the model's (a T1 scan given to a T2 model; refused by "
        "default: its findings would be the contrast, not lesions)",
    )
    add_orientation_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_detect)


def _run_detect(args: argparse.Namespace) -> int:
    import math

    try:
        threshold = None if args.threshold == "auto" else float(args.threshold)
    except ValueError:
        return usage_error(f"--threshold must be 'auto' or a number, got {args.threshold!r}")
    if threshold is not None and not math.isfinite(threshold):
        return usage_error(f"--threshold must be a finite number, got {args.threshold!r}")
    check_exist(args.inputs)
    check_model_folder(args.model)
    from brainuad.infer.calibration import check_threshold  # after the input checks: it imports torch

    if threshold is not None and check_threshold(threshold):
        return usage_error(f"--threshold {check_threshold(threshold)}")
    from brainuad.infer.detect import detect_batch

    device = device_from_flag(args.device)
    shard = shard_from_flag(args.shard)
    result = detect_batch(
        args.inputs,
        args.model,
        args.out,
        threshold,
        args.skull_strip,
        device,
        args.force,
        progress=not args.quiet,
        allow_contrast_mismatch=args.allow_contrast_mismatch,
        orientation=args.assume_orientation,
        shard=shard,
    )
    for folder in [*result.done, *result.skipped]:
        print(_finding_line(Path(folder)))
    return report_batch("detect", result, args.out)


def _finding_line(folder: Path) -> str:
    """One scan's result in a line: scan score (and its rank among healthy scans), findings, where the report is."""
    import math

    from brainuad.io.volumes import read_json

    summary = read_json(folder / "summary.json")
    percentile = summary.get("scan_score_percentile_vs_healthy")
    rank = f" (above {percentile:.0f} % of healthy scans)" if isinstance(percentile, float) and math.isfinite(
        percentile) else ""  # fmt: skip
    if (summary.get("calibration") or {}).get("simulated_reference"):
        rank = " (healthy reference simulated: no rank among healthy scans)"
    count, volume = summary.get("lesion_count", 0), summary.get("lesion_volume_ml_native", 0.0)
    return (
        f"  {folder.name}: scan score {summary['scan_score']:.3f}{rank}; {count} finding(s), {volume:.3g} mL "
        f"-> {folder / 'report.html'}"
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="slice- and voxel-level metrics on labelled cases",
        description="Evaluate a model on labelled cases (BraTS-style, MS-style or a slice-label CSV): slice AUROC and "
        "average precision, sensitivity, Dice at a threshold tuned on --tune-cases (never on the reported cases) or "
        "the calibrated one, best-achievable Dice as an upper bound, bootstrap intervals; summary.json, "
        "per_case.csv, table.md, roc.png, pr.png.",
    )
    p.add_argument("--model", required=True, metavar="RUN_DIR", help=MODEL_HELP)
    p.add_argument(
        "--cases", action="append", required=True, metavar="DIR", help="labelled cases to report (repeatable)"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="evaluation folder (built aside and swapped in as a whole)"
    )
    p.add_argument(
        "--tune-cases",
        action="append",
        default=None,
        metavar="DIR",
        help="labelled cases used only to pick the threshold and the default slice score",
    )
    p.add_argument(
        "--healthy",
        action="append",
        default=None,
        metavar="DIR",
        help="held-out healthy scans (raw NIfTI or preprocessed case folders; repeatable): scan-level AUROC/AP of "
        "patients against them and false-positive volume per healthy scan",
    )
    p.add_argument("--modality", default="t2", help="image modality in the case files (default: t2)")
    p.add_argument("--cache", default=None, metavar="DIR", help="keep preprocessed cases here to reuse them")
    add_device_flag(p)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    check_model_folder(args.model)
    check_exist(args.cases + (args.tune_cases or []))
    from brainuad.evaluate.evaluation import evaluate

    summary = evaluate(
        args.model,
        args.cases,
        args.out,
        tune_sources=args.tune_cases,
        modality=args.modality,
        cache_dir=args.cache,
        device=device_from_flag(args.device),
        progress=not args.quiet,
        seed=args.seed,
        healthy_sources=args.healthy,
    )
    slices = summary["slices"]
    line = (
        f"evaluate: {summary['cases']} cases, slice AUROC {slices['auroc']:.3f}, AP {slices['ap_abnormal_class']:.3f}"
        f" ({slices['score']})"
    )
    if "scans" in summary:
        line += f", scan AUROC {summary['scans']['auroc']:.3f} vs {summary['scans']['healthy']} healthy"
    if "voxels" in summary:
        line += f", Dice {summary['voxels']['dice_mean']:.3f}"
    print(f"{line} -> {args.out}")
    if summary.get("warning"):
        print(f"evaluate: {summary['warning']}", file=sys.stderr)
    return EXIT_OK
