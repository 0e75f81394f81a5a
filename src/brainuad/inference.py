"""Model + preprocessed case → reconstruction, anomaly map, segmentation, slice scores; and calibration on healthy
scans (the threshold and the healthy slice-error reference are model state, saved beside the weights)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainuad.device import resolve_device
from brainuad.errors import BrainuadError, InputError
from brainuad.io import read_json, write_json
from brainuad.postprocessing import (
    anomaly_map,
    calibrated_slice_scores,
    normality_scores,
    segment,
    slice_errors,
)
from brainuad.preprocessing import PreprocessedCase, load_case

CALIBRATION_FILE = "calibration.json"
#: The paper's post-processing at 1 mm — 5³ median filter, brain mask eroded by 2 voxels, components under 20 voxels
#: dropped — kept in millimetres, so a coarser grid (``paper-2mm``) filters the same physical extent: a 5-voxel
#: median at 2 mm would span 10 mm and erase MS-sized lesions.
MEDIAN_MM = 5.0
EROSION_MM = 2.0
MIN_COMPONENT_MM3 = 20.0


@dataclass(frozen=True)
class PostprocessingSizes:
    """The post-processing sizes in voxels for one grid spacing."""

    median_size: int
    erosion_voxels: int
    min_component_voxels: int

    def to_dict(self) -> dict:
        return asdict(self)


def postprocessing_sizes(spacing_mm: float) -> PostprocessingSizes:
    """Voxel sizes of the paper's post-processing on a ``spacing_mm`` grid: 5 / 2 / 20 at 1 mm, 3 / 1 / 3 at 2 mm."""
    median = max(1, round(MEDIAN_MM / spacing_mm))
    median += 1 - median % 2  # odd
    return PostprocessingSizes(
        median, max(0, round(EROSION_MM / spacing_mm)), max(1, math.ceil(MIN_COMPONENT_MM3 / spacing_mm**3))
    )


@torch.no_grad()
def reconstruct(model: nn.Module, image: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """The model's reconstruction of one volume, always in eval mode (BatchNorm uses its learned statistics)."""
    model.eval()
    device = resolve_device(device)
    x = torch.as_tensor(image, dtype=torch.float32, device=device)[None, None]
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(x)
    return out.float()[0, 0].cpu().numpy()


@dataclass
class Detection:
    """Everything detection produces for one case, on the MNI crop grid."""

    case: PreprocessedCase
    reconstruction: np.ndarray
    anomaly: np.ndarray
    segmentation: np.ndarray
    components: int
    threshold: float
    slice_errors: np.ndarray
    normality: np.ndarray
    calibrated: np.ndarray | None
    scan_score: float
    scan_percentile: float | None


def load_calibration(run_dir: str | Path) -> dict | None:
    """The run's calibration (``calibration.json``), or ``None`` if it was never calibrated."""
    from brainuad.shipped import resolve_model_dir

    path = resolve_model_dir(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    calibration = read_json(path)
    if not isinstance(calibration, dict):
        raise InputError(path, f"not a calibration (expected a JSON object, got {type(calibration).__name__})")
    threshold = calibration.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        # A NaN threshold flags nothing and says so nowhere: refuse it.
        raise InputError(path, f"'threshold' must be a finite number, got {threshold!r}; run 'brainuad calibrate'")
    return calibration


def scan_score(anomaly: np.ndarray, brain_mask: np.ndarray) -> float:
    """Scan-level anomaly score: the 99.9th percentile of the anomaly map inside the brain (robust to a few voxels)."""
    inside = anomaly[brain_mask]
    return float(np.percentile(inside, 99.9)) if inside.size else 0.0


def detect_case(
    model: nn.Module,
    case: PreprocessedCase,
    threshold: float | None = None,
    calibration: dict | None = None,
    device: str | torch.device = "cpu",
) -> Detection:
    """Run the model and the paper's post-processing on a preprocessed case.

    Args:
        model: Trained autoencoder.
        case: Preprocessed scan.
        threshold: Anomaly threshold for segmentation; ``None`` takes the calibrated one.
        calibration: The run's calibration (threshold, healthy slice-error reference, healthy scan scores).
        device: Where to run the network and the median filter.

    Raises:
        BrainuadError: No threshold given and the model was never calibrated.
    """
    if threshold is None:
        if calibration is None:
            raise BrainuadError("no threshold: run 'brainuad calibrate' on the model, or pass --threshold VALUE")
        threshold = float(calibration["threshold"])
    if math.isnan(threshold):
        raise BrainuadError("the threshold is NaN; give a number")
    image, brain = case.image.array, case.brain_mask.array
    reconstruction = reconstruct(model, image, device)
    sizes = postprocessing_sizes(case.grid.spacing_mm)
    # The normative model's z-score option: |x − centre| / spread = |x/spread − centre/spread|.
    scale = model.residual_scale() if hasattr(model, "residual_scale") else None
    scaled = (image, reconstruction) if scale is None else (image / scale, reconstruction / scale)
    anomaly = anomaly_map(*scaled, brain, sizes.median_size, sizes.erosion_voxels, device=device)
    labels, count = segment(anomaly, threshold, sizes.min_component_voxels)
    errors = slice_errors(anomaly)
    calibrated = None
    score = scan_score(anomaly, brain)
    percentile = None
    if calibration is not None:
        # A calibration fitted on labelled cases only has no healthy references.
        reference = calibration.get("slice_errors")
        if reference is not None and len(reference["mean"]) == errors.size:
            calibrated = calibrated_slice_scores(errors, np.asarray(reference["mean"]), np.asarray(reference["std"]))
        elif "held_out_healthy_scans" in calibration:
            calibrated = np.full(errors.shape, np.nan)  # too few held-out healthy scans for a reference
        healthy = np.asarray(calibration.get("healthy_scan_scores", []))
        percentile = float((healthy < score).mean() * 100) if healthy.size >= MIN_HEALTHY_REFERENCE_SCANS else None
    return Detection(
        case,
        reconstruction,
        anomaly,
        labels,
        count,
        threshold,
        errors,
        normality_scores(errors),
        calibrated,
        score,
        percentile,
    )


#: Fewer held-out healthy scans than this give no healthy references: a mean and spread over one or two scans turn
#: every slice into a z-score of thousands (or 1e10) and every scan into the "100th percentile".
MIN_HEALTHY_REFERENCE_SCANS = 3


def _input_digest(folder: Path) -> str | None:
    """The sha256 of the raw scan a preprocessed case came from (``record.json``), if recorded."""
    try:
        digest = (read_json(Path(folder) / "record.json").get("input") or {}).get("sha256")
    except (OSError, ValueError, AttributeError, BrainuadError):
        return None
    return digest if isinstance(digest, str) else None


def training_overlap(run_dir: str | Path, folders: list[Path]) -> list[str]:
    """Names of ``folders`` that are in the run's training split: the same folder, or a case preprocessed from the
    same raw scan (by its recorded sha256)."""
    split_path = Path(run_dir) / "split.json"
    if not split_path.is_file():
        return []
    trained = [Path(p) for p in read_json(split_path).get("train", [])]
    trained_paths = {p.resolve() for p in trained}
    trained_digests = {d for d in map(_input_digest, trained) if d}
    return [
        f.name for f in folders if Path(f).resolve() in trained_paths or (_input_digest(f) or "") in trained_digests
    ]


def calibrate(
    run_dir: str | Path,
    healthy: list[str | Path] | None = None,
    false_positive_rate: float = 1e-3,
    device: str | torch.device = "cpu",
    allow_training_scans: bool = False,
) -> dict:
    """Fit the detection threshold and the healthy references on healthy validation scans; save them in the run.

    The threshold is the anomaly value exceeded by ``false_positive_rate`` of brain voxels in healthy scans; the
    slice reference is the mean and standard deviation of e(u) per axial slice; the scan scores place a new scan's
    score among healthy ones. Use scans the model was not trained on: by default the run's own validation split
    (``split.json``). Scans the run was trained on are refused unless ``allow_training_scans`` (or the run has no
    held-out scan at all), and then named in the result's ``notes``; with fewer than
    :data:`MIN_HEALTHY_REFERENCE_SCANS` held-out scans the slice reference and scan percentiles are left out (z-scores
    come out NaN) and a note says why.

    Args:
        run_dir: Trained model folder.
        healthy: Folders of preprocessed healthy scans; ``None`` = the validation cases in ``RUN_DIR/split.json``.
        false_positive_rate: Fraction of healthy brain voxels above the threshold.
        device: Where to run the network.
        allow_training_scans: Accept healthy scans from the run's training split (an optimistic threshold).

    Returns:
        The calibration written to ``RUN_DIR/calibration.json`` (``calibrated_on`` says what it was fitted on).

    Raises:
        BrainuadError: Healthy scans from the model's own training split (a reconstruction model fits them too
            well, so the threshold would come out too low) unless ``allow_training_scans``; scans mixing crop grids,
            template contrasts or modalities.
    """
    from brainuad.checkpoints import load_model
    from brainuad.data import check_one_cohort, find_case_folders
    from brainuad.shipped import refuse_builtin

    refuse_builtin(run_dir, "calibrate")
    run_dir = Path(run_dir)
    device = resolve_device(device)
    model, config = load_model(run_dir, device=device)
    split_path = run_dir / "split.json"
    split = read_json(split_path) if split_path.is_file() else None
    if healthy is None:
        if split is None or not split.get("val"):
            raise InputError(split_path, "no validation split recorded: pass the healthy scans to calibrate on")
        healthy, origin = list(split["val"]), "the run's validation split"
    else:
        origin = "the healthy scans given"
    folders = find_case_folders(list(healthy))
    check_one_cohort(folders, "--healthy")
    # The run's own training scans (the same folder, or the same raw scan preprocessed again) are refused: a model
    # reconstructs them too well and the threshold comes out too low. Accepted when asked, or when the run has no
    # held-out scan at all (one healthy case: its split says so), and then named in the notes.
    no_held_out = bool((split or {}).get("note")) and sorted((split or {}).get("val", [])) == sorted(
        (split or {}).get("train", [])
    )
    in_training = [] if config.model.kind == "intensity" else training_overlap(run_dir, folders)
    if in_training and not (allow_training_scans or (origin == "the run's validation split" and no_held_out)):
        shown = ", ".join(in_training[:5]) + (f" (+{len(in_training) - 5} more)" if len(in_training) > 5 else "")
        raise BrainuadError(
            f"{len(in_training)} of the healthy scans were in the model's training split ({shown}): a model "
            "reconstructs its training scans too well, so the threshold would be too low. Calibrate on held-out "
            "scans (the run's validation split), or pass --allow-training-scans to accept it"
        )
    held_out = len(folders) - len(in_training)
    values, errors, scores, ratios = [], [], [], []
    for folder in folders:
        case = load_case(folder)
        if case.grid.shape != tuple(config.model.input_shape):
            raise InputError(
                folder,
                f"crop grid {case.grid.shape} ({case.grid.spacing_mm:g} mm) does not match the model's "
                f"{tuple(config.model.input_shape)}; preprocess the healthy scans with the model's preset "
                f"({config.preprocessing.preset})",
            )
        detection = detect_case(model, case, threshold=np.inf, device=device)
        values.append(detection.anomaly[case.brain_mask.array])
        errors.append(detection.slice_errors)
        scores.append(detection.scan_score)
        ratios.append(case.record.get("qc", {}).get("csf_to_white_matter"))
    if len({e.size for e in errors}) != 1:
        raise InputError(None, "healthy scans lie on different crop grids; preprocess them with one preset")
    pooled = np.concatenate(values)
    stack = np.stack(errors)
    notes = []
    if in_training:
        notes.append(
            f"{len(in_training)} of the {len(folders)} calibration scans were used in training "
            f"({', '.join(in_training)}): the threshold is optimistic, not a held-out estimate"
        )
    references = held_out >= MIN_HEALTHY_REFERENCE_SCANS
    if not references:
        notes.append(
            f"{held_out} held-out healthy scan(s), fewer than {MIN_HEALTHY_REFERENCE_SCANS}: no healthy slice "
            "reference (calibrated z-scores are NaN) and no scan percentile"
        )
    calibration = {
        "method": "healthy voxel false-positive rate",
        "false_positive_rate": false_positive_rate,
        "threshold": float(np.quantile(pooled, 1.0 - false_positive_rate)),
        "calibrated_on": f"{len(folders)} healthy scans ({origin}; {held_out} held out from training)",
        "healthy_cases": [str(f) for f in folders],
        "held_out_healthy_scans": held_out,
        "notes": notes,
        "slice_errors": {"mean": stack.mean(0).tolist(), "std": stack.std(0).tolist()} if references else None,
        "healthy_scan_scores": scores if references else [],
        # The healthy scans' contrast, to warn when detect is given another one (a T1 scan to a T2 model).
        "csf_to_white_matter": _median_or_none(ratios),
        # One preset for all cases (slice counts checked above), so the last case's grid stands for them all.
        "postprocessing": postprocessing_sizes(case.grid.spacing_mm).to_dict(),
    }
    write_json(run_dir / CALIBRATION_FILE, calibration)
    return calibration


def _median_or_none(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None
