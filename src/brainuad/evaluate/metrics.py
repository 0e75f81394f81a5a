"""Evaluation metrics: pure functions, numpy in, numbers out (no torch, no files).

Definitions (the README's "Metrics" section repeats them):

- **Slice label**: an axial slice is abnormal when it holds at least one lesion voxel.
- **Brain-containing slice**: its brain-mask area is at least ``min_fraction`` (default 1 %) of the largest axial
  brain cross-section in that scan. Slice metrics count these slices only; the paper's variant counts all slices.
- **Slice score**: e(u), the summed post-processed anomaly in the slice (higher = more abnormal). AUROC and average
  precision (AP) are computed with the *abnormal* slices as the positive class.
- **Paper's slice AUPRC**: the normal class positive, ranked by the normality score s(u), the area under the PR curve
  by the trapezoid rule, all slices — reported beside ours for comparison only.
- **Sensitivity / specificity at the operating threshold**: a slice is flagged abnormal when the final segmentation
  (thresholded, small components dropped) has at least one voxel in it.
- **Voxel AP**: average precision over brain voxels (plus every lesion voxel), pooled over cases; lesion voxels that
  fall outside the crop count as positives that are never detected (recall cannot reach 1).
- **Dice**: 2|P∩T| / (|P| + |T|), with lesion voxels outside the crop added to |T|; NaN when both are empty.
- **Lesion matching** (:data:`HIT_RULE`): a predicted component hits a reference lesion when their overlap is at
  least 10 % of the component's voxels; a lesion is detected when at least one component hits it (a lesion split
  into several components counts once); a component that hits no lesion is a false positive. One blob spread over
  the white matter therefore finds none of the small plaques it touches (each is a sliver of it), as in the
  lesion-detection benchmarks (MSSEG's: detected when the covering components are not mostly outside the lesion).
- **Best-achievable Dice**: the highest pooled Dice over all thresholds of the anomaly map (before the component
  filter) — an upper bound, since it picks the threshold on the very cases it reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

AXIAL = 2


#: A predicted component hits a reference lesion when their overlap is at least this share of the component.
MIN_COMPONENT_SHARE = 0.1
HIT_RULE = (
    "a predicted 26-connected component hits a reference lesion when their overlap is >= 10% of the component's "
    "voxels; a lesion is detected when >= 1 component hits it; a component hitting no lesion is a false positive"
)


def slice_labels(lesion: np.ndarray, axis: int = AXIAL) -> np.ndarray:
    """Per-slice labels along ``axis``: True where the slice holds any lesion voxel."""
    other = tuple(a for a in range(lesion.ndim) if a != axis)
    return np.asarray(lesion, bool).any(axis=other)


def brain_slices(brain_mask: np.ndarray, min_fraction: float = 0.01, axis: int = AXIAL) -> np.ndarray:
    """Slices whose brain area is at least ``min_fraction`` of the largest brain cross-section (see module docs)."""
    other = tuple(a for a in range(brain_mask.ndim) if a != axis)
    area = np.asarray(brain_mask, bool).sum(axis=other)
    if area.max(initial=0) == 0:
        return np.zeros(area.shape, bool)
    return area >= max(1.0, min_fraction * area.max())


def _two_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < labels.sum() < labels.size


def auroc(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> float:
    """Area under the ROC curve (positive = label 1); NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels, bool).ravel(), np.asarray(scores, np.float64).ravel()
    return float(roc_auc_score(labels, scores)) if _two_classes(labels) else float("nan")


def average_precision(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray, missed_positives: int = 0) -> float:
    """Average precision Σ (R_k − R_{k−1}) P_k over the distinct score thresholds (scikit-learn's definition).

    Args:
        labels: Binary labels (1 = positive).
        scores: Higher = more likely positive.
        missed_positives: Positives that have no score at all (lesion voxels outside the crop): they count in the
            recall's denominator and are never found.

    Returns:
        AP in [0, 1]; NaN when there is no positive at all.
    """
    labels = np.asarray(labels, bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in size")
    total_positives = int(labels.sum()) + int(missed_positives)
    if total_positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_positives = np.cumsum(sorted_labels)
    # Evaluate only at the last position of each run of tied scores: ties enter together.
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = true_positives[last_of_tie].astype(np.float64)
    predicted = last_of_tie + 1.0
    precision = tp / predicted
    recall = tp / total_positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def paper_slice_auprc(normal_labels: np.ndarray, normality: np.ndarray) -> float:
    """The paper's slice AUPRC: normal class positive, ranked by s(u), trapezoid area under the PR curve."""
    from sklearn.metrics import auc, precision_recall_curve

    normal_labels = np.asarray(normal_labels, bool).ravel()
    if not _two_classes(normal_labels):
        return float("nan")
    precision, recall, _ = precision_recall_curve(normal_labels, np.asarray(normality, np.float64).ravel())
    return float(auc(recall, precision))


def sensitivity_specificity(labels: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    """(TP / positives, TN / negatives); NaN for a class that is absent."""
    labels, flagged = np.asarray(labels, bool).ravel(), np.asarray(flagged, bool).ravel()
    positives, negatives = labels.sum(), (~labels).sum()
    sensitivity = float((labels & flagged).sum() / positives) if positives else float("nan")
    specificity = float((~labels & ~flagged).sum() / negatives) if negatives else float("nan")
    return sensitivity, specificity


def dice(prediction: np.ndarray, truth: np.ndarray, missed_truth: int = 0) -> float:
    """Dice overlap of two binary volumes; ``missed_truth`` true voxels lie outside both arrays (outside the crop).

    Returns NaN when prediction and truth are both empty.
    """
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    denominator = int(prediction.sum()) + int(truth.sum()) + int(missed_truth)
    if denominator == 0:
        return float("nan")
    return float(2.0 * np.logical_and(prediction, truth).sum() / denominator)


@dataclass(frozen=True)
class DiceSweep:
    """The pooled Dice at its best threshold (voxels with score > threshold are predicted)."""

    threshold: float
    dice: float


def best_dice_threshold(
    scores: Sequence[np.ndarray], truths: Sequence[np.ndarray], missed_truth: Sequence[int] | None = None
) -> DiceSweep:
    """The threshold that maximises Dice pooled over cases, searched exactly over every distinct score.

    Used two ways: on labelled *tuning* cases it fits the operating threshold; on the reported cases it gives the
    best-achievable Dice (an upper bound, not a result).

    Args:
        scores: One anomaly array per case (only the voxels that matter: e.g. brain ∪ lesion).
        truths: Matching binary lesion arrays.
        missed_truth: Per case, lesion voxels outside the arrays (count against recall).
    """
    if len(scores) != len(truths) or not scores:
        raise ValueError("need one truth array per score array, and at least one case")
    flat_scores = np.concatenate([np.asarray(s, np.float64).ravel() for s in scores])
    flat_truth = np.concatenate([np.asarray(t, bool).ravel() for t in truths])
    if flat_scores.shape != flat_truth.shape:
        raise ValueError("score and truth arrays differ in size")
    positives = int(flat_truth.sum()) + int(sum(missed_truth or []))
    if positives == 0:
        return DiceSweep(float(flat_scores.max(initial=0.0)), float("nan"))
    order = np.argsort(-flat_scores, kind="mergesort")
    sorted_scores = flat_scores[order]
    tp = np.cumsum(flat_truth[order])
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    dices = 2.0 * tp[last_of_tie] / (last_of_tie + 1.0 + positives)
    best = int(np.argmax(dices))
    # Predict score > threshold: put the threshold half-way to the next lower score.
    index = last_of_tie[best]
    below = sorted_scores[index + 1] if index + 1 < sorted_scores.size else sorted_scores[index] - 1.0
    return DiceSweep(float((sorted_scores[index] + below) / 2.0), float(dices[best]))


def bootstrap_ci(
    n_cases: int,
    statistic: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(case_indices)``, resampling cases with replacement.

    Resamples where the statistic is undefined (NaN, e.g. one class only) are dropped; (NaN, NaN) when fewer than
    two cases or no resample is defined.
    """
    if n_cases < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n_cases, n_cases)) for _ in range(n_resamples)], np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class LesionMatch:
    """Reference lesions and predicted components of one scan, matched under :data:`HIT_RULE` (label arrays: 0 =
    none)."""

    reference_labels: np.ndarray
    reference_count: int
    predicted_labels: np.ndarray
    predicted_count: int
    reference_detected: np.ndarray  # per reference lesion 1…n: hit by at least one predicted component
    predicted_true: np.ndarray  # per predicted component 1…m: hits at least one reference lesion

    @property
    def false_positives(self) -> int:
        return int((~self.predicted_true).sum())


def match_lesions(
    predicted_labels: np.ndarray, predicted_count: int, reference_labels: np.ndarray, reference_count: int
) -> LesionMatch:
    """Match predicted components to reference lesions under :data:`HIT_RULE` (see module docs)."""
    predicted_labels, reference_labels = np.asarray(predicted_labels), np.asarray(reference_labels)
    if predicted_labels.shape != reference_labels.shape:
        raise ValueError(f"predicted {predicted_labels.shape} and reference {reference_labels.shape} differ in shape")
    both = (predicted_labels > 0) & (reference_labels > 0)
    detected = np.zeros(reference_count + 1, bool)
    true = np.zeros(predicted_count + 1, bool)
    if both.any():
        component_size = np.bincount(predicted_labels.ravel(), minlength=predicted_count + 1)
        pairs, overlap = np.unique(
            np.stack([predicted_labels[both], reference_labels[both]]), axis=1, return_counts=True
        )
        hit = overlap >= MIN_COMPONENT_SHARE * component_size[pairs[0]]
        true[pairs[0][hit]] = True
        detected[pairs[1][hit]] = True
    return LesionMatch(
        reference_labels, int(reference_count), predicted_labels, int(predicted_count), detected[1:], true[1:]
    )
