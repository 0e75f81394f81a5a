"""Scores beyond the paper's slice score, for ``brainuad evaluate``: slice scores that do not grow with brain area,
scan-level triage against healthy scans, and lesion-level detection.

- **Slice scores** (higher = more abnormal; :data:`SLICE_SCORES`): the paper's e(u) (``paper_eu``) beside scores
  that do not grow with the slice's brain area. The default is the one with the best pooled slice AP on the
  *tuning* cases (never the reported ones); with no tuning cases, :data:`FALLBACK_SLICE_SCORE`.
- **Scan scores** (:data:`SCAN_SCORES`): one number per scan; AUROC / AP with patients as the positive class against
  healthy scans, and each patient's percentile among the healthy calibration scans.
- **Lesions**: 26-connected components of the final segmentation matched to 26-connected reference lesions under
  :data:`brainuad.evaluate.metrics.HIT_RULE` (overlap >= 10 % of the component); sensitivity per reference lesion,
  false positives per scan, detection by size bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brainuad.evaluate import metrics
from brainuad.infer.calibration import Calibration, SliceReference
from brainuad.infer.postprocessing import (
    calibrated_slice_scores,
    describe_lesions,
    segmented_area,
    slice_errors,
    slice_means,
    slice_percentile,
)
from brainuad.infer.trained import TrainedModel

SLICE_SCORES = {
    "paper_eu": "the paper's e(u): summed post-processed anomaly in the slice (grows with brain area)",
    "mean": "mean post-processed anomaly over the slice's eroded brain: e(u) / brain area",
    "p99": "99th percentile of the post-processed anomaly over the slice's eroded brain",
    "segmented_ml": "volume of the final segmentation (threshold, small components dropped) in the slice, mL",
    "calibrated_z": "e(u) as a z-score against the healthy calibration scans' e(u) at the same slice",
}
FALLBACK_SLICE_SCORE = "p99"
SCAN_SCORES = {
    "p999": "99.9th percentile of the post-processed anomaly map inside the brain (the calibrated scan score)",
    "lesion_ml": "volume of the final segmentation (lesion load above the threshold), mL",
}
DEFAULT_SCAN_SCORE = "p999"
#: Reference-lesion size bins (mL, lower bound inclusive), as in the MS / stroke lesion-detection literature.
SIZE_BINS = (("<1 mL", 0.0, 1.0), ("1-10 mL", 1.0, 10.0), (">10 mL", 10.0, math.inf))


def map_slice_scores(
    anomaly: np.ndarray, region: np.ndarray, reference: SliceReference | None
) -> dict[str, np.ndarray]:
    """Every slice score that needs only the anomaly map (``segmented_ml`` needs the threshold: added later).

    Args:
        anomaly: Post-processed anomaly map (crop grid).
        region: The eroded brain mask the map was masked with.
        reference: The calibration's healthy slice reference; ``calibrated_z`` is left out without a matching one.
    """
    errors = slice_errors(anomaly)
    scores = {"paper_eu": errors, "mean": slice_means(anomaly, region), "p99": slice_percentile(anomaly, region, 99)}
    if reference is not None and len(reference.mean) == errors.size:
        scores["calibrated_z"] = calibrated_slice_scores(errors, np.asarray(reference.mean), np.asarray(reference.std))
    return scores


def add_segmentation_scores(scores: dict[str, np.ndarray], segmentation: np.ndarray, voxel_ml: float) -> None:
    """Add ``segmented_ml`` (per-slice segmentation volume) once the threshold is known."""
    scores["segmented_ml"] = segmented_area(segmentation, voxel_ml)


def _pooled(labels: Sequence[np.ndarray], scores: Sequence[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate(list(labels)), np.concatenate([s[name] for s in scores])


def available(scores: Sequence[dict]) -> list[str]:
    """Slice-score names every case has, in :data:`SLICE_SCORES` order."""
    return [n for n in SLICE_SCORES if scores and all(n in s for s in scores)]


def choose_slice_score(labels: Sequence[np.ndarray], scores: Sequence[dict]) -> tuple[str, dict]:
    """The slice score with the highest pooled slice AP (abnormal class) on tuning cases.

    Args:
        labels: Per tuning case, the abnormal labels of its counted slices.
        scores: Per tuning case, ``{name: scores of the same slices}``.

    Returns:
        The chosen name and each candidate's tuning AP. Ties keep :data:`SLICE_SCORES` order; with no abnormal
        and normal slice among the tuning cases, :data:`FALLBACK_SLICE_SCORE`.
    """
    aps = {n: metrics.average_precision(*_pooled(labels, scores, n)) for n in available(scores)}
    finite = {n: ap for n, ap in aps.items() if np.isfinite(ap)}
    pooled = np.concatenate(list(labels)) if labels else np.zeros(0, bool)
    if not finite or pooled.all():
        return FALLBACK_SLICE_SCORE, aps
    return max(finite, key=lambda n: (finite[n], -list(SLICE_SCORES).index(n))), aps


def case_slice_scores(evaluation) -> dict[str, np.ndarray]:
    """Every slice score of an evaluated case (:class:`brainuad.evaluate.evaluation.CaseEvaluation`), e(u) included."""
    return {"paper_eu": evaluation.slice_error, **evaluation.slice_scores}


def counted_slices(evaluations: Sequence) -> tuple[list[np.ndarray], list[dict]]:
    """Per evaluated case, the abnormal labels and every slice score of its counted (labelled, brain) slices."""
    keep = [e.slice_known & e.brain_slices for e in evaluations]
    labels = [e.slice_abnormal[k] for e, k in zip(evaluations, keep)]
    return labels, [{n: v[k] for n, v in case_slice_scores(e).items()} for e, k in zip(evaluations, keep)]


def default_slice_score(tuned: Sequence, calibration: Calibration | None) -> tuple[str, dict]:
    """The default slice score: best slice AP on the tuning cases; else the calibration's; else the fixed one.

    Returns:
        The name and how it was chosen (with each candidate's tuning AP when chosen on tuning cases).
    """
    if tuned:
        name, aps = choose_slice_score(*counted_slices(tuned))
        return name, {"source": f"best pooled slice AP on {len(tuned)} tuning cases", "tuning_ap": aps}
    if calibration is not None and calibration.slice_score in SLICE_SCORES:
        return calibration.slice_score, {"source": "calibration.json (chosen on its tuning cases)"}
    return FALLBACK_SLICE_SCORE, {"source": "fixed default: no tuning cases to choose on"}


def slice_score_metrics(
    labels: Sequence[np.ndarray], scores: Sequence[dict], seed: int = 0, resamples: int = 1000
) -> dict[str, dict]:
    """Pooled slice AUROC and AP (abnormal class) of every slice score, with 95 % bootstrap intervals over cases."""
    out = {}
    for name in available(scores):

        def statistic(function, name=name):
            return lambda idx: function(*_pooled([labels[i] for i in idx], [scores[i] for i in idx], name))

        out[name] = {
            "definition": SLICE_SCORES[name],
            "auroc": metrics.auroc(*_pooled(labels, scores, name)),
            "auroc_ci95": metrics.bootstrap_ci(len(labels), statistic(metrics.auroc), resamples, seed=seed),
            "ap": metrics.average_precision(*_pooled(labels, scores, name)),
            "ap_ci95": metrics.bootstrap_ci(len(labels), statistic(metrics.average_precision), resamples, seed=seed),
        }
    return out


def percentile_among(value: float, healthy: Sequence[float]) -> float | None:
    """Percentage of healthy reference scores strictly below ``value`` (``None`` without a reference)."""
    healthy = np.asarray(healthy, np.float64)
    return float((healthy < value).mean() * 100.0) if healthy.size else None


def scan_summary(patients: Sequence[dict], healthy: Sequence[dict], seed: int = 0, resamples: int = 1000) -> dict:
    """Patients (positive) against healthy scans: AUROC and AP of every scan score, bootstrap over scans.

    Args:
        patients: Per patient scan, ``{score name: value}``.
        healthy: Per healthy scan, the same.
    """
    labels = np.r_[np.ones(len(patients), bool), np.zeros(len(healthy), bool)]
    by_score = {}
    for name in SCAN_SCORES:
        values = np.array([s[name] for s in [*patients, *healthy]], np.float64)

        def statistic(function, values=values):
            return lambda idx: function(labels[idx], values[idx])

        by_score[name] = {
            "definition": SCAN_SCORES[name],
            "auroc": metrics.auroc(labels, values),
            "auroc_ci95": metrics.bootstrap_ci(labels.size, statistic(metrics.auroc), resamples, seed=seed),
            "ap": metrics.average_precision(labels, values),
            "ap_ci95": metrics.bootstrap_ci(labels.size, statistic(metrics.average_precision), resamples, seed=seed),
        }
    default = by_score[DEFAULT_SCAN_SCORE]
    return {
        "patients": len(patients),
        "healthy": len(healthy),
        "positive_class": "patients",
        "score": DEFAULT_SCAN_SCORE,
        "score_definition": SCAN_SCORES[DEFAULT_SCAN_SCORE],
        "auroc": default["auroc"],
        "auroc_ci95": default["auroc_ci95"],
        "ap": default["ap"],
        "ap_ci95": default["ap_ci95"],
        "by_score": by_score,
        "interval": "95 % percentile bootstrap over scans (patients and healthy resampled together)",
    }


def healthy_summary(healthy: Sequence[dict]) -> dict:
    """False positives on healthy scans at the operating threshold (every finding there is false)."""
    volumes = np.array([h["lesion_ml"] for h in healthy], np.float64)
    components = np.array([h["components"] for h in healthy], np.float64)
    return {
        "scans": len(healthy),
        "false_positive_ml_mean": float(volumes.mean()) if volumes.size else float("nan"),
        "false_positive_ml_median": float(np.median(volumes)) if volumes.size else float("nan"),
        "false_positive_components_per_scan": float(components.mean()) if components.size else float("nan"),
        "scans_with_any_finding": int((volumes > 0).sum()),
        "names": [h["name"] for h in healthy],
        "false_positive_ml": [round(float(v), 4) for v in volumes],  # per scan, in the order of ``names``
    }


def size_bin(volume_ml: float) -> str:
    """The :data:`SIZE_BINS` label of a lesion volume."""
    return next(label for label, low, high in SIZE_BINS if low <= volume_ml < high)


def lesion_rows(case: str, match: metrics.LesionMatch, anomaly: np.ndarray, mni_affine: np.ndarray) -> list[dict]:
    """One row per reference lesion and per predicted component of one case (volume, centroid, scores, outcome).

    Args:
        case: Case name.
        match: The case's matched lesions.
        anomaly: The anomaly map on the same grid (peak and mean score per lesion).
        mni_affine: The crop grid's voxel → MNI mm affine.
    """
    rows = []
    for kind, labels, hit in (
        ("reference", match.reference_labels, match.reference_detected),
        ("predicted", match.predicted_labels, match.predicted_true),
    ):
        for lesion in describe_lesions(labels, anomaly, mni_affine):
            rows.append(
                {
                    "case": case,
                    "kind": kind,
                    "id": lesion["id"],
                    "volume_ml": round(lesion["volume_ml_mni"], 4),
                    "size_bin": size_bin(lesion["volume_ml_mni"]),
                    "centroid_mni_mm": " ".join(f"{c:.1f}" for c in lesion["centroid_mni_mm"]),
                    "peak_score": lesion["peak_score"],
                    "mean_score": lesion["mean_score"],
                    # reference: hit by >= 1 predicted component; predicted: hits >= 1 reference lesion (HIT_RULE)
                    "matched": bool(hit[lesion["id"] - 1]),
                }
            )
    return rows


def lesion_summary(rows: Sequence[dict], cases: int, min_reference_ml: float) -> dict:
    """Lesion-level sensitivity, false positives per scan and detection by size bin, pooled over cases."""
    reference = [r for r in rows if r["kind"] == "reference"]
    predicted = [r for r in rows if r["kind"] == "predicted"]
    false_positives = sum(not r["matched"] for r in predicted)
    by_size = {}
    for label, _, _ in SIZE_BINS:
        in_bin = [r for r in reference if r["size_bin"] == label]
        detected = sum(r["matched"] for r in in_bin)
        by_size[label] = {
            "lesions": len(in_bin),
            "detected": detected,
            "sensitivity": detected / len(in_bin) if in_bin else float("nan"),
        }
    detected = sum(r["matched"] for r in reference)
    return {
        "definition": "26-connected components of the final segmentation matched to 26-connected reference lesions "
        "on the crop grid; a split lesion counts once",
        "hit_rule": metrics.HIT_RULE,
        "cases": cases,
        "reference_lesions": len(reference),
        "min_reference_ml": min_reference_ml,
        "detected": detected,
        "sensitivity": detected / len(reference) if reference else float("nan"),
        "false_positives": false_positives,
        "false_positives_per_scan": false_positives / cases if cases else float("nan"),
        "by_size": by_size,
    }


def _input_hash(folder: Path) -> str | None:
    from brainuad.train.runfolder import input_digest

    return input_digest(folder)


def healthy_case_folders(sources: Sequence[str | Path], config, cache: Path) -> list[Path]:
    """Preprocessed case folders of healthy scans given raw (NIfTI files or folders of them, preprocessed here with
    the model's settings into ``cache``) or already preprocessed (case folders, or folders of them)."""
    from brainuad.data.datasets import find_case_folders
    from brainuad.io.volumes import find_nifti_files
    from brainuad.preprocess.cases import case_names, is_case_folder
    from brainuad.preprocess.pipeline import preprocess_file

    folders: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir() and (is_case_folder(source) or any(is_case_folder(p) for p in source.iterdir())):
            folders.extend(find_case_folders([source]))
            continue
        paths = find_nifti_files([source])
        names = case_names(paths)
        folders.extend(preprocess_file(p, cache, config.preprocessing, name=names[p])[1] for p in paths)
    return folders


def held_out_healthy(trained: TrainedModel, sources: Sequence[str | Path], cache: Path) -> list[Path]:
    """The healthy scans' case folders (:func:`healthy_case_folders`), refusing any the model has seen.

    Raises:
        BrainuadError: A healthy scan is one the model was trained, validated or calibrated on (same input file
            content).
    """
    from brainuad.errors import BrainuadError
    from brainuad.io.volumes import read_json

    if not sources:
        return []
    split_path = trained.run_dir / "split.json"
    split = read_json(split_path) if split_path.is_file() else {}
    calibrated_on = (trained.calibration.healthy_cases or ()) if trained.calibration else ()
    from brainuad.io.portable import resolve_relative
    from brainuad.train.runfolder import split_identities

    used: set[str] = set()
    unchecked: list[str] = []
    for part in ("train", "val"):
        _, digests, missing = split_identities(split, part, trained.run_dir)
        used |= digests
        unchecked += missing
    used |= {h for h in (_input_hash(resolve_relative(p, trained.run_dir)) for p in calibrated_on) if h}
    if unchecked:
        import warnings

        warnings.warn(
            f"{len(unchecked)} of the scans the model was trained or validated on could not be checked against the "
            f"healthy scans (not found from here, e.g. {unchecked[0]}, and no input sha256 in split.json: the run "
            "folder was moved without its data?): the healthy scans may include them",
            stacklevel=2,
        )
    folders = healthy_case_folders(sources, trained.config, cache)
    overlap = sorted(f.name for f in folders if _input_hash(f) in used)
    if overlap:
        raise BrainuadError(
            f"healthy scans the model was trained, validated or calibrated on: {', '.join(overlap)}; "
            "report false positives on held-out healthy scans only"
        )
    return folders


def healthy_scan_scores(trained: TrainedModel, folders: Sequence[Path], threshold: float) -> list[dict]:
    """Scan scores and findings (all false positives) of healthy case folders at the operating threshold.

    Raises:
        InputError: A healthy scan lies on another crop grid than the model's.
    """
    from brainuad.preprocess.cases import load_case

    rows = []
    for folder in folders:
        case = load_case(folder)
        trained.check_case(case, folder)
        detection = trained.detect(case, threshold)
        rows.append(
            {
                "name": folder.name,
                "p999": detection.scan_score,
                "lesion_ml": float((detection.segmentation > 0).sum() * case.grid.voxel_ml),
                "components": detection.components,
            }
        )
    return rows
