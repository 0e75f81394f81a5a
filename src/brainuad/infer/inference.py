"""Model + preprocessed case → reconstruction, anomaly map, slice scores (:func:`analyse_case`) and, at a threshold,
the segmentation (:func:`detect_case`). The post-processing sizes come from the run's ``postprocessing`` config; the
healthy references from its :class:`~brainuad.infer.calibration.Calibration`."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from brainuad.config import PostprocessConfig
from brainuad.errors import BrainuadError
from brainuad.infer.calibration import Calibration
from brainuad.infer.postprocessing import (
    PostprocessingSizes,
    anomaly_map,
    calibrated_slice_scores,
    normality_scores,
    postprocessing_sizes,
    segment,
    slice_errors,
)
from brainuad.preprocess.cases import PreprocessedCase
from brainuad.train.device import resolve_device

#: Fewer held-out healthy scans than this give no healthy references: a mean and spread over one or two scans turn
#: every slice into a z-score of thousands (or 1e10) and every scan into the "100th percentile".
MIN_HEALTHY_REFERENCE_SCANS = 3


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
class Analysis:
    """Everything the model and the post-processing give for one case before any threshold (MNI crop grid)."""

    case: PreprocessedCase
    reconstruction: np.ndarray
    anomaly: np.ndarray
    sizes: PostprocessingSizes
    slice_errors: np.ndarray
    normality: np.ndarray
    calibrated: np.ndarray | None
    scan_score: float
    scan_percentile: float | None


@dataclass
class Detection(Analysis):
    """An :class:`Analysis` segmented at ``threshold`` (components under the minimum size dropped)."""

    segmentation: np.ndarray
    components: int
    threshold: float
    extent: float | None = None


def scan_score(anomaly: np.ndarray, brain_mask: np.ndarray) -> float:
    """Scan-level anomaly score: the 99.9th percentile of the anomaly map inside the brain (robust to a few voxels)."""
    inside = anomaly[brain_mask]
    return float(np.percentile(inside, 99.9)) if inside.size else 0.0


def analyse_case(
    model: nn.Module,
    case: PreprocessedCase,
    calibration: Calibration | None = None,
    device: str | torch.device = "cpu",
    postprocess: PostprocessConfig | None = None,
    spread: np.ndarray | None = None,
) -> Analysis:
    """Run the model and the paper's post-processing on a preprocessed case (no threshold: see :func:`detect_case`).

    Args:
        model: Trained model.
        case: Preprocessed scan.
        calibration: The run's calibration: its healthy references give calibrated slice z-scores and the scan's
            percentile among healthy scans (``None``: neither).
        device: Where to run the network and the median filter.
        postprocess: The run's post-processing settings (``None``: the paper's).
        spread: The healthy voxel-wise spread the map is divided by (a calibration with ``--normalise-residual``),
            on the crop grid; ``None``: the map as it is.
    """
    image, brain = case.image.array, case.brain_mask.array
    reconstruction = reconstruct(model, image, device)
    sizes = postprocessing_sizes(case.grid.spacing_mm, postprocess)
    # The normative model's z-score option: |x − centre| / spread = |x/spread − centre/spread|.
    scale = model.residual_scale() if hasattr(model, "residual_scale") else None
    scaled = (image, reconstruction) if scale is None else (image / scale, reconstruction / scale)
    anomaly = anomaly_map(*scaled, brain, sizes.median_size, sizes.erosion_voxels, device=device)
    if spread is not None:  # in multiples of what healthy brains show at each voxel
        anomaly = (anomaly / spread).astype(np.float32)
    errors = slice_errors(anomaly)
    calibrated = None
    score = scan_score(anomaly, brain)
    percentile = None
    if calibration is not None:
        # A calibration fitted on labelled cases only has no healthy references.
        reference = calibration.slice_errors
        if reference is not None and len(reference.mean) == errors.size:
            calibrated = calibrated_slice_scores(errors, np.asarray(reference.mean), np.asarray(reference.std))
        elif calibration.held_out_healthy_scans is not None:
            calibrated = np.full(errors.shape, np.nan)  # too few held-out healthy scans for a reference
        healthy = np.asarray(calibration.healthy_scores)
        if healthy.size >= MIN_HEALTHY_REFERENCE_SCANS and not calibration.simulated_reference:
            # A rank among simulated scans means nothing for a real scan (every real one ranks above 0 % or 100 %).
            percentile = float((healthy < score).mean() * 100)
    return Analysis(
        case, reconstruction, anomaly, sizes, errors, normality_scores(errors), calibrated, score, percentile
    )


def segment_analysis(analysis: Analysis, threshold: float, extent: float | None = None) -> Detection:
    """Segment an analysed case at ``threshold`` (delineated by hysteresis down to ``extent`` when given).

    Raises:
        BrainuadError: A NaN threshold.
    """
    if math.isnan(threshold):
        raise BrainuadError("the threshold is NaN; give a number")
    labels, count = segment(analysis.anomaly, threshold, analysis.sizes.min_component_voxels, extent)
    return Detection(
        **{f.name: getattr(analysis, f.name) for f in fields(Analysis)},
        segmentation=labels,
        components=count,
        threshold=float(threshold),
        extent=None if extent is None else float(extent),
    )


def detect_case(
    model: nn.Module,
    case: PreprocessedCase,
    threshold: float,
    calibration: Calibration | None = None,
    device: str | torch.device = "cpu",
    postprocess: PostprocessConfig | None = None,
    spread: np.ndarray | None = None,
) -> Detection:
    """:func:`analyse_case`, then the segmentation at ``threshold`` (decided by the caller, e.g.
    :meth:`brainuad.infer.trained.TrainedModel.threshold`).

    Raises:
        BrainuadError: A NaN threshold.
    """
    if math.isnan(threshold):
        raise BrainuadError("the threshold is NaN; give a number")
    return segment_analysis(analyse_case(model, case, calibration, device, postprocess, spread), threshold)
