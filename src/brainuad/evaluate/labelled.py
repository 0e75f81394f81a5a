"""Labelled cases on the model's crop grid — the lesion mask or slice labels carried over from the scan, the
anomaly map — and the threshold applied to them (:func:`apply_threshold`) or tuned on them (:func:`tune_threshold`).
Shared by ``brainuad evaluate`` and ``brainuad calibrate --labelled``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainuad.config import PostprocessConfig
from brainuad.data.datasets import LabelledCase
from brainuad.errors import BrainuadError, InputError
from brainuad.evaluate import metrics, scores
from brainuad.infer.postprocessing import PostprocessingSizes, erode_mask, postprocessing_sizes, segment
from brainuad.infer.trained import TrainedModel
from brainuad.io.volumes import load_volume, read_grid, to_canonical
from brainuad.preprocess.cases import PreprocessedCase, load_case
from brainuad.preprocess.pipeline import preprocess_file
from brainuad.preprocess.registration import fraction_outside_grid, native_to_mni
from brainuad.preprocess.templates import Grid


@dataclass
class CaseEvaluation:
    """One case's raw material for the metrics (MNI crop grid; slices along the axial axis)."""

    name: str
    layout: str
    slice_known: np.ndarray  # slices that have a label (all, for voxel-labelled cases)
    slice_abnormal: np.ndarray
    brain_slices: np.ndarray
    slice_error: np.ndarray
    normality: np.ndarray
    # The full anomaly map, region (brain ∪ lesion) and lesion masks until the threshold is applied; afterwards
    # anomaly and lesion hold only the region's voxels (flat) and region is None.
    anomaly: np.ndarray | None = field(repr=False)
    region: np.ndarray | None = field(default=None, repr=False)
    lesion: np.ndarray | None = field(default=None, repr=False)
    lesion_outside_crop: int = 0  # lesion voxels lost by the crop, in crop-grid voxels
    grid: Grid | None = None  # the crop grid (1 mm when not given)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig, repr=False)  # the run's
    flagged: np.ndarray | None = None
    dice: float = float("nan")
    predicted_voxels: int = 0
    predicted_csf_voxels: int = 0  # of those, in the MNI template's CSF (normal anatomy; issue #34)
    true_positive: int = 0
    slice_scores: dict = field(default_factory=dict, repr=False)  # name → per-slice score (scores.SLICE_SCORES)
    scan_scores: dict = field(default_factory=dict)  # name → value (scores.SCAN_SCORES)
    lesion_rows: list = field(default_factory=list, repr=False)  # scores.lesion_rows, voxel-labelled cases

    @property
    def voxel_ml(self) -> float:
        return self.grid.voxel_ml if self.grid is not None else 0.001

    @property
    def sizes(self) -> PostprocessingSizes:
        """The post-processing sizes in voxels on this case's crop grid."""
        return postprocessing_sizes(self.grid.spacing_mm if self.grid is not None else 1.0, self.postprocess)

    @property
    def has_voxels(self) -> bool:
        return self.lesion is not None

    def region_scores(self) -> np.ndarray:
        """Anomaly scores of the brain ∪ lesion voxels (what the pooled voxel metrics rank)."""
        return self.anomaly if self.region is None else self.anomaly[self.region]

    def region_truth(self) -> np.ndarray:
        """Lesion labels of the same voxels, in the same order."""
        return self.lesion if self.region is None else self.lesion[self.region]


def lesion_on_crop(case: LabelledCase, pre: PreprocessedCase) -> tuple[np.ndarray, int]:
    """The case's lesion mask on the crop grid, and how many crop-grid voxels of lesion the crop cut off.

    Raises:
        InputError: The label file does not lie on its image's voxel grid (shape or affine differ).
    """
    # Headers only: the image's voxels are not needed to check that the label shares its grid.
    label_shape, label_affine = read_grid(case.label_path)
    image_shape, image_affine = read_grid(case.image_path)
    if label_shape != image_shape or not np.allclose(label_affine, image_affine, atol=1e-3):
        raise InputError(
            case.label_path,
            f"label grid {label_shape} does not match its image {case.image_path.name} {image_shape} "
            "(shape or affine differ); labels must lie on the image's voxel grid",
        )
    label = load_volume(case.label_path, "label")
    lesion_native = label.array > 0
    lesion = native_to_mni(lesion_native.astype(np.uint8), pre.transform, pre.grid, order=0) > 0
    outside = fraction_outside_grid(lesion_native, pre.transform, pre.grid) * lesion_native.sum()
    outside_crop_voxels = round(float(outside) * label.voxel_volume_ml / pre.grid.voxel_ml)
    return lesion, outside_crop_voxels


def _slice_labels_from_csv(case: LabelledCase, pre: PreprocessedCase) -> tuple[np.ndarray, np.ndarray]:
    """MNI slice labels from native slice labels: each MNI slice takes the majority label of its brain voxels."""
    # Slice indices in the CSV run along the file's third axis: code them in file order, then reorient exactly as
    # load_volume reorients the image (from the file's own affine), so they land on the scan's RAS grid.
    shape_in_file, file_affine = read_grid(case.image_path)
    coded = np.zeros(shape_in_file, np.uint8)
    for index, label in (case.slice_labels or {}).items():
        if index >= shape_in_file[2]:
            raise InputError(case.image_path, f"slice label for slice {index}, but the file has {shape_in_file[2]}")
        coded[:, :, index] = label + 1  # 0 = unlabelled, 1 = normal, 2 = abnormal
    coded_ras_array, _ = to_canonical(coded, file_affine)
    on_crop = native_to_mni(coded_ras_array, pre.transform, pre.grid, order=0)
    brain = pre.brain_mask.array
    known, abnormal = [], []
    for u in range(on_crop.shape[2]):
        values = on_crop[:, :, u][brain[:, :, u] & (on_crop[:, :, u] > 0)]
        known.append(values.size > 0)
        abnormal.append(values.size > 0 and (values == 2).mean() > 0.5)
    return np.array(known), np.array(abnormal)


def evaluate_case(trained: TrainedModel, case: LabelledCase, cache_dir: Path) -> CaseEvaluation:
    """Preprocess (cached), reconstruct and post-process one labelled case; the threshold is applied later.

    Raises:
        InputError: The case's crop grid is not the model's; its labels do not lie on its image's grid.
    """
    _, folder = preprocess_file(case.image_path, cache_dir, trained.config.preprocessing, name=case.name)
    pre = load_case(folder)
    trained.check_case(pre, case.image_path)
    analysis = trained.analyse(pre)
    brain = pre.brain_mask.array
    eroded = erode_mask(brain, analysis.sizes.erosion_voxels)
    reference = trained.calibration.slice_errors if trained.calibration is not None else None
    common = {
        "slice_scores": scores.map_slice_scores(analysis.anomaly, eroded, reference),
        "scan_scores": {"p999": analysis.scan_score},
        "name": case.name,
        "layout": case.layout,
        "brain_slices": metrics.brain_slices(brain),
        "slice_error": analysis.slice_errors,
        "normality": analysis.normality,
        "anomaly": analysis.anomaly,
        "grid": pre.grid,
        "postprocess": trained.config.postprocessing,
    }
    if case.label_path is not None:
        lesion, outside = lesion_on_crop(case, pre)
        return CaseEvaluation(
            slice_known=np.ones(brain.shape[2], bool),
            slice_abnormal=metrics.slice_labels(lesion),
            region=brain | lesion,
            lesion=lesion,
            lesion_outside_crop=outside,
            **common,
        )
    known, abnormal = _slice_labels_from_csv(case, pre)
    return CaseEvaluation(slice_known=known, slice_abnormal=abnormal, **common)


def apply_threshold(evaluation: CaseEvaluation, threshold: float, extent: float | None = None) -> None:
    """Segment at ``threshold`` (small components dropped; delineated down to ``extent`` by hysteresis when given):
    slice flags, Dice, predicted volume; frees the map."""
    labels, count = segment(evaluation.anomaly, threshold, evaluation.sizes.min_component_voxels, extent)
    predicted = labels > 0
    evaluation.flagged = predicted.any(axis=(0, 1))
    evaluation.predicted_voxels = int(predicted.sum())
    if evaluation.grid is not None:
        from brainuad.preprocess.templates import tissue_masks_on

        evaluation.predicted_csf_voxels = int((predicted & tissue_masks_on(evaluation.grid)[0]).sum())
    scores.add_segmentation_scores(evaluation.slice_scores, labels, evaluation.voxel_ml)
    evaluation.scan_scores["lesion_ml"] = evaluation.predicted_voxels * evaluation.voxel_ml
    if evaluation.has_voxels:
        # Reference lesions smaller than the segmentation's smallest component cannot be reported: not counted.
        reference, references = segment(evaluation.lesion, 0.5, evaluation.sizes.min_component_voxels)
        match = metrics.match_lesions(labels, count, reference, references)
        affine = evaluation.grid.affine_array if evaluation.grid is not None else np.eye(4)
        evaluation.lesion_rows = scores.lesion_rows(evaluation.name, match, evaluation.anomaly, affine)
        evaluation.true_positive = int(np.logical_and(predicted, evaluation.lesion).sum())
        evaluation.dice = metrics.dice(predicted, evaluation.lesion, evaluation.lesion_outside_crop)
        # Keep only what the pooled voxel metrics need — brain ∪ lesion voxels as flat arrays, not whole volumes —
        # so that memory grows with the brain, not the crop, over many cases. region ⊇ lesion: no lesion voxel lost.
        evaluation.anomaly = evaluation.anomaly[evaluation.region]
        evaluation.lesion = evaluation.lesion[evaluation.region]
        evaluation.region = None
    else:
        evaluation.anomaly = None  # slice labels only: the slice metrics use slice_error, not the map


def tune_threshold(evaluations: list[CaseEvaluation]) -> metrics.DiceSweep:
    """Best pooled-Dice threshold on labelled tuning cases (voxel labels needed)."""
    voxel = [e for e in evaluations if e.has_voxels]
    if not voxel:
        raise BrainuadError("--tune-cases need voxel labels (BraTS- or MS-style), not slice labels only")
    return metrics.best_dice_threshold(
        [e.region_scores() for e in voxel], [e.region_truth() for e in voxel], [e.lesion_outside_crop for e in voxel]
    )
