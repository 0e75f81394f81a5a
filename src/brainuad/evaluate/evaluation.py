"""``brainuad evaluate``: labelled cases in, the paper's metrics out — under a protocol a reviewer would accept.

The operating threshold comes from ``--tune-cases`` (best pooled Dice on those cases, never the reported ones) or
from the model's calibration; the best-achievable Dice on the reported cases is given beside it as an upper bound.
Lesion voxels that fall outside the crop are counted as missed. Metric definitions: :mod:`brainuad.evaluate.metrics`.

Slice, scan and lesion scores beyond the paper's: :mod:`brainuad.evaluate.scores`.

Outputs in ``DIR/``: ``summary.json`` (with ``froc``: :mod:`brainuad.evaluate.froc`), ``per_case.csv``,
``per_lesion.csv`` (voxel-labelled cases), ``table.md``, ``roc.png``, ``pr.png``, ``froc.png`` and
``slice_scores.npz`` (per-slice labels, e(u) and the default score of every case).
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainuad.data.datasets import LabelledCase, find_labelled_cases
from brainuad.errors import BrainuadError, OutputError
from brainuad.evaluate import froc, metrics, scores
from brainuad.evaluate.labelled import CaseEvaluation, apply_threshold, evaluate_case, tune_threshold
from brainuad.infer.calibration import CALIBRATION_FILE, Calibration
from brainuad.infer.trained import TrainedModel
from brainuad.io.files import csv_safe
from brainuad.io.volumes import atomic_folder, atomic_path, check_replaceable, ensure_writable_folder, write_json

BOOTSTRAP_RESAMPLES = 1000
#: Below this many cases a bootstrap over cases has too few distinct resamples to be an interval: none is given.
MIN_BOOTSTRAP_CASES = 5


def _slice_arrays(
    evaluations: list[CaseEvaluation], counted_only: bool = True, score: str = "paper_eu"
) -> dict[str, np.ndarray]:
    keep = [e.slice_known & (e.brain_slices if counted_only else True) for e in evaluations]
    every = [scores.case_slice_scores(e) for e in evaluations]
    return {
        "abnormal": np.concatenate([e.slice_abnormal[k] for e, k in zip(evaluations, keep)]),
        "error": np.concatenate([e.slice_error[k] for e, k in zip(evaluations, keep)]),
        "score": np.concatenate([c.get(score, e.slice_error)[k] for e, c, k in zip(evaluations, every, keep)]),
        "normality": np.concatenate([e.normality[k] for e, k in zip(evaluations, keep)]),
        "flagged": np.concatenate([e.flagged[k] for e, k in zip(evaluations, keep)]),
    }


def summarise(
    evaluations: list[CaseEvaluation],
    threshold: float,
    threshold_source: str,
    seed: int = 0,
    slice_score: str | None = None,
    slice_score_choice: dict | None = None,
    healthy: list[dict] | None = None,
) -> dict:
    """Every metric of the README's definitions, with bootstrap confidence intervals over cases.

    Args:
        evaluations: The reported cases, thresholded.
        threshold: The operating threshold and where it came from (``threshold_source``).
        seed: Bootstrap seed.
        slice_score: The default slice score (:data:`brainuad.evaluate.scores.SLICE_SCORES`) and how it was chosen.
        slice_score_choice: How the default slice score was chosen (recorded as given).
        healthy: Healthy scans' scan scores (:func:`brainuad.evaluate.scores.healthy_scan_scores`) for scan-level
        triage.
    """
    counted = _slice_arrays(evaluations)
    every = _slice_arrays(evaluations, counted_only=False)
    sensitivity, specificity = metrics.sensitivity_specificity(counted["abnormal"], counted["flagged"])
    n = len(evaluations)
    resamples = BOOTSTRAP_RESAMPLES if n >= MIN_BOOTSTRAP_CASES else 0  # 0 resamples: (NaN, NaN)
    by_score = scores.slice_score_metrics(*scores.counted_slices(evaluations), seed, resamples)
    slice_score = slice_score if slice_score in by_score else "paper_eu"
    default = by_score[slice_score]
    voxel = [e for e in evaluations if e.has_voxels]
    dices = np.array([e.dice for e in voxel])
    summary: dict = {
        "cases": n,
        "intervals": {
            "method": f"95% percentile bootstrap over cases, {BOOTSTRAP_RESAMPLES} resamples",
            "given": n >= MIN_BOOTSTRAP_CASES,
            "note": None if resamples else f"no intervals: {n} case(s), fewer than {MIN_BOOTSTRAP_CASES}",
        },
        "slices": {
            "rule": "axial MNI slices whose brain area is >= 1% of the case's largest axial brain cross-section",
            "counted": int(counted["abnormal"].size),
            "abnormal": int(counted["abnormal"].sum()),
            "score": slice_score,
            "score_definition": scores.SLICE_SCORES[slice_score],
            "score_choice": slice_score_choice or {"source": "given"},
            "auroc": default["auroc"],
            "auroc_ci95": default["auroc_ci95"],
            "ap_abnormal_class": default["ap"],
            "ap_abnormal_class_ci95": default["ap_ci95"],
            "by_score": by_score,
            "abnormal_prevalence": float(counted["abnormal"].mean()) if counted["abnormal"].size else float("nan"),
            "sensitivity": sensitivity,
            "specificity": specificity,
            "sensitivity_definition": "abnormal slices holding >= 1 voxel of the final segmentation / abnormal slices",
            "paper_auprc_normal_class_all_slices": metrics.paper_slice_auprc(~every["abnormal"], every["normality"]),
        },
        "threshold": {"value": threshold, "source": threshold_source},
    }
    if voxel:
        best = metrics.best_dice_threshold(
            [e.region_scores() for e in voxel],
            [e.region_truth() for e in voxel],
            [e.lesion_outside_crop for e in voxel],
        )
        summary["voxels"] = {
            "cases_with_voxel_labels": len(voxel),
            "ap_pooled": metrics.average_precision(
                np.concatenate([e.region_truth() for e in voxel]),
                np.concatenate([e.region_scores() for e in voxel]),
                missed_positives=sum(e.lesion_outside_crop for e in voxel),
            ),
            "ap_region": "brain mask ∪ lesion on the crop grid, pooled over cases; lesion outside the crop = missed",
            "dice_mean": float(np.nanmean(dices)) if np.isfinite(dices).any() else float("nan"),
            "dice_mean_ci95": metrics.bootstrap_ci(
                len(voxel),
                lambda idx: float(np.nanmean(dices[idx])),
                BOOTSTRAP_RESAMPLES if len(voxel) >= MIN_BOOTSTRAP_CASES else 0,
                seed=seed,
            ),
            "dice_nan_cases": int(np.isnan(dices).sum()),
            "dice_pooled": _pooled_dice(voxel),
            "best_achievable_dice_pooled": best.dice,
            "best_achievable_threshold": best.threshold,
            "best_achievable_note": "upper bound: threshold chosen on the reported cases themselves",
            "lesion_outside_crop_ml": float(sum(e.lesion_outside_crop * e.voxel_ml for e in voxel)),
        }
        min_ml = voxel[0].sizes.min_component_voxels * voxel[0].voxel_ml
        summary["lesions"] = scores.lesion_summary([r for e in voxel for r in e.lesion_rows], len(voxel), min_ml)
    if healthy is not None:
        summary["scans"] = scores.scan_summary([e.scan_scores for e in evaluations], healthy, seed, BOOTSTRAP_RESAMPLES)
        summary["healthy"] = scores.healthy_summary(healthy)
    return summary


def _pooled_dice(voxel: list[CaseEvaluation]) -> float:
    """2 Σ TP / (Σ |P| + Σ |T|) over cases (lesion outside the crop counted in |T|)."""
    overlap = sum(e.true_positive for e in voxel)
    total = sum(e.predicted_voxels + int(e.lesion.sum()) + e.lesion_outside_crop for e in voxel)
    return float(2.0 * overlap / total) if total else float("nan")


def per_case_rows(
    evaluations: list[CaseEvaluation], slice_score: str = "paper_eu", healthy: Sequence[float] = ()
) -> list[dict]:
    """One row per case: layout, Dice, volumes, slice counts, the case's own slice AUROC (default slice score and
    the paper's e(u), when defined), its scan scores, percentile among the ``healthy`` calibration scans' scan
    scores and lesion counts."""
    rows = []
    for e in evaluations:
        counted = e.slice_known & e.brain_slices
        score = scores.case_slice_scores(e).get(slice_score, e.slice_error)
        reference = [r for r in e.lesion_rows if r["kind"] == "reference"]
        predicted = [r for r in e.lesion_rows if r["kind"] == "predicted"]
        rows.append(
            {
                "case": e.name,
                "layout": e.layout,
                "dice": e.dice,
                "lesion_ml_in_crop": float(e.lesion.sum() * e.voxel_ml) if e.has_voxels else float("nan"),
                "lesion_ml_outside_crop": e.lesion_outside_crop * e.voxel_ml,
                "predicted_ml": e.predicted_voxels * e.voxel_ml,
                # Predicted / reference volume: 1 when the finding's volume is the lesion's (NaN without a lesion).
                "volume_ratio": (e.predicted_voxels / float(e.lesion.sum()))
                if e.has_voxels and e.lesion.sum()
                else float("nan"),
                # The share of the flagged volume in CSF (MNI template CSF probability > 0.5): normal anatomy.
                "predicted_csf_share": (e.predicted_csf_voxels / e.predicted_voxels)
                if e.predicted_voxels
                else float("nan"),
                "slices_counted": int(counted.sum()),
                "slices_abnormal": int(e.slice_abnormal[counted].sum()),
                "slice_auroc": metrics.auroc(e.slice_abnormal[counted], score[counted]),
                "slice_auroc_paper_eu": metrics.auroc(e.slice_abnormal[counted], e.slice_error[counted]),
                "slice_sensitivity": metrics.sensitivity_specificity(e.slice_abnormal[counted], e.flagged[counted])[0],
                "scan_score_p999": e.scan_scores.get("p999", float("nan")),
                "scan_percentile_vs_healthy": scores.percentile_among(e.scan_scores.get("p999", np.nan), healthy),
                "reference_lesions": len(reference) if e.has_voxels else "",
                "reference_lesions_detected": sum(r["matched"] for r in reference) if e.has_voxels else "",
                "false_positive_components": sum(not r["matched"] for r in predicted) if e.has_voxels else "",
            }
        )
    return rows


def _fmt(value: float, ci: tuple[float, float] | None = None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{value:.3f}"
    if ci is not None and all(np.isfinite(ci)):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


TABLE_HEADER = (
    "| method | slice AUROC | slice AP (abnormal) | paper AUPRC (normal, all slices) | sensitivity | specificity "
    "| Dice (mean) | Dice (pooled) | best Dice (upper bound) | voxel AP |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n"
)


def method_label(kind: str, run_name: str) -> str:
    """A table's method label: the model kind, and the run folder's name when it says more (``ae``, not
    ``ae (ae)``; ``ae (t2-long)``)."""
    return kind if run_name == kind else f"{kind} ({run_name})"


def table_row(method: str, summary: dict) -> str:
    """One row of the paper's Table 2/3 layout (95 % bootstrap intervals over cases in brackets)."""
    s, v = summary["slices"], summary.get("voxels", {})
    if not summary.get("intervals", {}).get("given", True):
        method += f" (n={summary['cases']}: too few cases for intervals)"
    cells = [
        method,
        _fmt(s["auroc"], s["auroc_ci95"]),
        _fmt(s["ap_abnormal_class"], s["ap_abnormal_class_ci95"]),
        _fmt(s["paper_auprc_normal_class_all_slices"]),
        _fmt(s["sensitivity"]),
        _fmt(s["specificity"]),
        _fmt(v.get("dice_mean", float("nan")), v.get("dice_mean_ci95")),
        _fmt(v.get("dice_pooled", float("nan"))),
        _fmt(v.get("best_achievable_dice_pooled", float("nan"))),
        _fmt(v.get("ap_pooled", float("nan"))),
    ]
    return "| " + " | ".join(cells) + " |\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(csv_safe(row) for row in rows)  # no spreadsheet formulas from case names


def _write_curves(evaluations: list[CaseEvaluation], out: Path, label: str, slice_score: str) -> None:
    from brainuad.report.figures import plot_pr_curves, plot_roc_curves

    counted = _slice_arrays(evaluations, score=slice_score)
    curves = {label: (counted["abnormal"], counted["score"])}
    plot_roc_curves(curves, out / "roc.png", "slice-level ROC (brain-containing axial slices)")
    plot_pr_curves(curves, out / "pr.png", "slice-level precision-recall (abnormal class)")


def evaluate(
    run_dir: str | Path,
    case_sources: list[str | Path],
    out_dir: str | Path,
    tune_sources: list[str | Path] | None = None,
    modality: str = "t2",
    cache_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    seed: int = 0,
    healthy_sources: list[str | Path] | None = None,
) -> dict:
    """Evaluate a trained (or baseline) model on labelled cases; write the summary, tables and curves.

    Args:
        run_dir: Model folder (``brainuad train`` output; calibrated, or pass ``tune_sources``).
        case_sources: Folders of BraTS-/MS-style cases or slice-label CSVs to report on.
        out_dir: Output folder, built aside and swapped into place whole (a brainuad folder, an empty one, or none).
        tune_sources: Labelled cases used only to choose the threshold (best pooled Dice); they must not overlap the
            reported cases.
        modality: Image modality in the case files (``t2``, ``flair``…).
        cache_dir: Keep preprocessed cases here for reuse (default: a temporary folder).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: Show a progress bar.
        seed: Seed of the bootstrap.
        healthy_sources: Held-out healthy scans (raw NIfTI or preprocessed case folders) for scan-level triage
            (patients against healthy) and false positives per healthy scan.

    Returns:
        The summary written to ``out_dir/summary.json``.

    Raises:
        BrainuadError: No threshold available, overlapping tuning and reported cases, healthy scans the model was
            trained or calibrated on, unusable cases.
    """
    from tqdm import tqdm

    from brainuad.io.provenance import provenance
    from brainuad.io.shipped import resolve_model_dir

    start = time.perf_counter()
    run_dir, out_dir = resolve_model_dir(run_dir), Path(out_dir)
    _refuse_run_folder_as_output(run_dir, out_dir)
    _check_output_folder(out_dir, cache_dir)  # fail before the work, not after it
    trained = TrainedModel.load(run_dir, device)
    config, calibration = trained.config, trained.calibration
    cases = [c for source in case_sources for c in find_labelled_cases(source, modality)]
    tune = [c for source in tune_sources or [] for c in find_labelled_cases(source, modality)]
    refuse_duplicate_names(cases, "--cases")
    refuse_duplicate_names(tune, "--tune-cases")
    refuse_overlap(cases, tune, calibration if not tune else None, run_dir)
    if not tune:
        threshold, source = trained.threshold(otherwise="pass --tune-cases")  # before the work

    temporary = None if cache_dir else tempfile.TemporaryDirectory(prefix="brainuad-eval-")
    cache = Path(cache_dir) if cache_dir else Path(temporary.name)
    try:
        # Before the work: healthy scans the model has seen are refused.
        healthy_folders = scores.held_out_healthy(trained, healthy_sources, cache / "healthy")
        healthy = None
        bar = tqdm(total=len(tune) + len(cases), desc="evaluate", unit="case", disable=not progress)
        tuned = []
        for case in tune:
            tuned.append(evaluate_case(trained, case, cache / "tune"))
            bar.update(1)
        if tune:
            sweep = tune_threshold(tuned)
            threshold, source = trained.threshold(
                sweep.threshold, f"best pooled Dice ({sweep.dice:.3f}) on {len(tune)} tuning cases"
            )
        grid = froc.thresholds_around(threshold)
        froc_tuning = [_froc_counts(e, grid) for e in tuned if e.has_voxels]
        extent = trained.extent(threshold)  # the calibration's delineation, at its own threshold only
        for evaluation in tuned:
            apply_threshold(evaluation, threshold, extent)  # segmentation-based slice scores compete too
        slice_score, choice = scores.default_slice_score(tuned, calibration)
        del tuned
        if healthy_sources:
            healthy = scores.healthy_scan_scores(trained, healthy_folders, threshold)
        evaluations, froc_reported = [], []
        for case in cases:
            evaluation = evaluate_case(trained, case, cache / "cases")
            if evaluation.has_voxels:
                froc_reported.append(_froc_counts(evaluation, grid))
            apply_threshold(evaluation, threshold, extent)
            evaluations.append(evaluation)
            bar.update(1)
        bar.close()
    finally:
        if temporary is not None:
            temporary.cleanup()

    warning = trained.banner
    final_dir = out_dir
    summary = summarise(evaluations, threshold, source, seed, slice_score, choice, healthy)
    summary["froc"] = froc.summarise(froc_tuning, froc_reported, threshold)
    summary["threshold"]["extent"] = extent
    summary.update(
        {
            "reconstruction_check": trained.reconstruction_check,
            "warning": warning,
            "model": {
                "name": trained.name(final_dir),  # builtin:NAME@VERSION+SHA, or the run relative to this folder
                "kind": config.model.kind,
                "weights_sha256": trained.weights_sha256,
                "calibration_sha256": trained.calibration_sha256,
            },
            "reported_cases": [c.name for c in cases],
            "tuning_cases": [c.name for c in tune],
            "modality": modality,
            "seconds": round(time.perf_counter() - start, 1),
            "provenance": provenance(),
        }
    )
    # The whole folder is built aside and swapped into place: no file of an earlier run (per_lesion.csv) stays
    # beside the new ones, and a full disk leaves the earlier folder (or none), never one that only looks finished.
    with atomic_folder(final_dir, EVALUATION_OUTPUTS) as out_dir:
        write_json(out_dir / "summary.json", summary)
        healthy_scores = calibration.healthy_scores if calibration is not None else ()
        _write_csv(out_dir / "per_case.csv", per_case_rows(evaluations, slice_score, healthy_scores))
        with atomic_path(out_dir / "table.md") as tmp:
            table = TABLE_HEADER + table_row(method_label(config.model.kind, run_dir.name), summary)
            tmp.write_text(f"**{warning}**\n\n{table}" if warning else table)
        with atomic_path(out_dir / "slice_scores.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **{f"{k}": v for k, v in _slice_arrays(evaluations, score=slice_score).items()})
        lesions = [r for e in evaluations for r in e.lesion_rows]
        if lesions:
            _write_csv(out_dir / "per_lesion.csv", lesions)
        _write_curves(evaluations, out_dir, f"{config.model.kind} ({slice_score})", slice_score)
        if summary["froc"] is not None:
            from brainuad.report.figures import plot_froc

            plot_froc(summary["froc"], out_dir / "froc.png", f"{config.model.kind}: lesion detection (FROC)")
    return summary


def _froc_counts(evaluation: CaseEvaluation, grid) -> froc.FrocCounts:
    """The case's FROC counts (before :func:`apply_threshold` frees its full anomaly map)."""
    return froc.case_counts(
        evaluation.anomaly, evaluation.lesion, grid, evaluation.sizes.min_component_voxels, evaluation.voxel_ml
    )


#: What an evaluation folder of an older brainuad (before the ownership marker) held: such a folder may be replaced.
EVALUATION_OUTPUTS = (
    "summary.json",
    "per_case.csv",
    "per_lesion.csv",
    "table.md",
    "slice_scores.npz",
    "roc.png",
    "pr.png",
    "froc.png",
)


def _check_output_folder(out_dir: Path, cache_dir: str | Path | None) -> None:
    """Before the work: ``out_dir`` can be replaced as a whole (brainuad's, empty or absent; its parent writable),
    and the ``--cache`` is not inside it (replacing the folder would delete the cache)."""
    check_replaceable(out_dir, EVALUATION_OUTPUTS)
    ensure_writable_folder(out_dir.parent)
    if cache_dir is not None and Path(cache_dir).resolve().is_relative_to(out_dir.resolve()):
        raise OutputError(
            Path(cache_dir), f"--cache lies inside --out {out_dir}, which is replaced as a whole; put it elsewhere"
        )


def _refuse_run_folder_as_output(run_dir: Path, out_dir: Path) -> None:
    """An evaluation never writes into a model's run folder (its summary.json and files would be overwritten)."""
    if out_dir.resolve() == run_dir.resolve() or (out_dir / "config.json").exists():
        raise OutputError(
            out_dir, "is a model's run folder; evaluation results would overwrite its files — choose another --out"
        )


def refuse_duplicate_names(cases: list[LabelledCase], flag: str) -> None:
    """Refuse two cases of one name (two folders holding ``case01``, say): each would be counted, and the per-case
    table could not tell them apart.

    Raises:
        BrainuadError: Naming the duplicated case and both of its images.
    """
    first: dict[str, Path] = {}
    for case in cases:
        if case.name in first:
            raise BrainuadError(
                f"{flag}: two cases are named {case.name!r} ({first[case.name]} and {case.image_path}); each case "
                "must have its own name"
            )
        first[case.name] = case.image_path


def refuse_overlap(
    cases: list[LabelledCase], tune: list[LabelledCase], calibration: Calibration | None, run_dir: Path
) -> None:
    """Refuse reported cases that were used to choose the threshold — given as ``--tune-cases`` or recorded as the
    calibration's labelled tuning cases — matched by path and by content (SHA-256 of the image file), so a renamed
    copy of a tuning case is caught too."""
    from brainuad.io.portable import resolve_relative
    from brainuad.io.provenance import sha256_file

    tuning: dict[str, str] = {}  # path or hash → how the tuning case is named
    for case in tune:
        tuning[str(case.image_path.resolve())] = case.name
        tuning[sha256_file(case.image_path)] = case.name
    if calibration is not None and calibration.tuning_cases:
        where = f"{run_dir / CALIBRATION_FILE} tuning case"
        for path in calibration.tuning_cases:
            tuning[str(resolve_relative(path, run_dir).resolve())] = f"{where} {path}"
        for digest, path in zip(calibration.tuning_cases_sha256 or (), calibration.tuning_cases):
            tuning[digest] = f"{where} {path}"
    if calibration is not None and calibration.extent_tuning_cases_sha256:
        # The cases the extent level was chosen on count as tuning cases too (by content: names are not kept).
        where = f"{run_dir / CALIBRATION_FILE} extent tuning case"
        for digest, name in zip(calibration.extent_tuning_cases_sha256, calibration.extent_tuning_cases or ()):
            tuning[digest] = f"{where} {name}"
    if not tuning:
        return
    overlap = []
    for case in cases:
        for key in (str(case.image_path.resolve()), sha256_file(case.image_path)):
            if key in tuning:
                overlap.append(f"{case.image_path} = {tuning[key]}")
                break
    if overlap:
        raise BrainuadError(f"reported cases were used to choose the threshold ({'; '.join(overlap)}); keep them apart")
