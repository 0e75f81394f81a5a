"""Metric functions against hand-computed answers and scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from brainuad.evaluate import metrics


def test_slice_labels_and_brain_slices():
    lesion = np.zeros((4, 4, 5), bool)
    lesion[1, 1, 3] = True
    assert metrics.slice_labels(lesion).tolist() == [False, False, False, True, False]
    brain = np.zeros((10, 10, 4), bool)
    brain[:, :, 1] = True  # 100 voxels: the largest section
    brain[0, 0, 2] = True  # 1 voxel = 1 %: counts
    brain[:, :, 3] = False
    assert metrics.brain_slices(brain).tolist() == [False, True, True, False]
    assert metrics.brain_slices(brain, min_fraction=0.05).tolist() == [False, True, False, False]
    assert not metrics.brain_slices(np.zeros((3, 3, 3))).any()


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),  # perfect ranking
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),  # inverted
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([0, 1, 1], [0.1, 0.3, 0.2], 1.0),
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # one of four pairs wrong
    ],
)
def test_auroc_hand_computed(labels, scores, expected):
    assert metrics.auroc(labels, scores) == pytest.approx(expected)


def test_auroc_undefined_for_one_class():
    assert math.isnan(metrics.auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.auroc([0, 0], [0.1, 0.2]))
    assert math.isnan(metrics.auroc([], []))


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], (1.0 + 2 / 3) / 2),  # ranks 1 and 3: P = 1, 2/3
        ([0, 0, 1], [0.9, 0.8, 0.7], 1 / 3),
        ([1, 1, 1], [0.1, 0.2, 0.3], 1.0),  # all positive
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: one threshold, P = 1/2
    ],
)
def test_average_precision_hand_computed(labels, scores, expected):
    assert metrics.average_precision(labels, scores) == pytest.approx(expected)


def test_average_precision_matches_sklearn_with_ties(rng):
    for _ in range(20):
        labels = rng.random(300) < 0.2
        scores = np.round(rng.random(300) + labels * 0.3, 1)  # rounding makes many ties
        assert metrics.average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))
        assert metrics.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_average_precision_missed_positives_cap_recall():
    # Two found at the top, two never scored: recall reaches 1/2 only; AP = 1/2 × precision 1.
    assert metrics.average_precision([1, 1, 0], [0.9, 0.8, 0.1], missed_positives=2) == pytest.approx(0.5)
    assert math.isnan(metrics.average_precision([0, 0], [0.1, 0.2]))


def test_paper_slice_auprc_uses_normal_class():
    normal = np.array([1, 1, 1, 0])
    normality = np.array([0.9, 0.8, 0.7, 0.1])  # perfect: normal slices have the highest s(u)
    assert metrics.paper_slice_auprc(normal, normality) == pytest.approx(1.0)
    assert math.isnan(metrics.paper_slice_auprc(np.ones(4), normality))


def test_sensitivity_specificity():
    labels = np.array([1, 1, 0, 0, 0])
    flagged = np.array([1, 0, 1, 0, 0])
    assert metrics.sensitivity_specificity(labels, flagged) == pytest.approx((0.5, 2 / 3))
    sens, spec = metrics.sensitivity_specificity(np.zeros(3), np.zeros(3))
    assert math.isnan(sens) and spec == 1.0


def test_dice_edge_cases():
    a = np.zeros((3, 3, 3), bool)
    assert math.isnan(metrics.dice(a, a))  # both empty
    b = a.copy()
    b[0, 0, 0] = True
    assert metrics.dice(b, b) == 1.0
    assert metrics.dice(a, b) == 0.0  # nothing predicted
    assert metrics.dice(b, a) == 0.0  # nothing true
    assert metrics.dice(b, b, missed_truth=2) == pytest.approx(2 / 4)  # lesion outside the crop counts as missed
    with pytest.raises(ValueError, match="shape"):
        metrics.dice(a, np.zeros((2, 2, 2)))


def test_best_dice_threshold_exact():
    scores = [np.array([0.9, 0.8, 0.3, 0.2]), np.array([0.85, 0.1])]
    truths = [np.array([1, 1, 0, 0]), np.array([1, 0])]
    sweep = metrics.best_dice_threshold(scores, truths)
    assert sweep.dice == pytest.approx(1.0)
    assert 0.3 < sweep.threshold < 0.8
    predicted = np.concatenate(scores) > sweep.threshold
    assert metrics.dice(predicted, np.concatenate(truths).astype(bool)) == pytest.approx(1.0)
    # A brute-force search over thresholds agrees on random data.
    rng = np.random.default_rng(1)
    s = [rng.random(200)]
    t = [(s[0] + rng.normal(0, 0.3, 200)) > 0.9]
    brute = max(metrics.dice(s[0] > th, t[0]) for th in np.r_[s[0], -1.0])
    assert metrics.best_dice_threshold(s, t).dice == pytest.approx(brute)
    assert math.isnan(metrics.best_dice_threshold([np.ones(3)], [np.zeros(3)]).dice)


def test_bootstrap_ci_brackets_the_statistic():
    values = np.array([0.2, 0.4, 0.6, 0.8])
    low, high = metrics.bootstrap_ci(4, lambda idx: float(values[idx].mean()), n_resamples=500)
    assert 0.2 <= low < values.mean() < high <= 0.8
    assert all(math.isnan(v) for v in metrics.bootstrap_ci(1, lambda idx: 0.0))
    assert all(math.isnan(v) for v in metrics.bootstrap_ci(3, lambda idx: float("nan")))


def test_a_hit_needs_a_real_share_of_the_component():
    """The hit rule: overlap >= 10 % of the component. A small component inside a lesion hits it; one blob that
    covers three small lesions but is mostly elsewhere hits none of them and is a false positive."""
    reference = np.zeros((30, 30, 30), np.int32)
    reference[2:4, 2:4, 2:4] = 1  # 8 voxels
    reference[10:12, 2:4, 2:4] = 2
    reference[20:22, 2:4, 2:4] = 3
    reference[5:15, 20:28, 20:28] = 4  # a large lesion, 640 voxels
    predicted = np.zeros_like(reference)
    predicted[0:25, 0:6, 0:6] = 1  # 900 voxels covering lesions 1–3 entirely (24 voxels: 2.7 % of it)
    predicted[8:10, 22:24, 22:24] = 2  # 8 voxels inside lesion 4
    predicted[25:29, 25:29, 0:4] = 3  # 64 voxels touching nothing
    match = metrics.match_lesions(predicted, 3, reference, 4)
    assert match.reference_detected.tolist() == [False, False, False, True]
    assert match.predicted_true.tolist() == [False, True, False]
    assert match.false_positives == 2
    predicted[0:25, 0:6, 0:6] = 0
    predicted[1:5, 1:5, 1:5] = 1  # 64 voxels around lesion 1: its 8 voxels are 12.5 % of the component
    match = metrics.match_lesions(predicted, 3, reference, 4)
    assert match.reference_detected.tolist() == [True, False, False, True] and match.false_positives == 1


def test_froc_on_a_hand_built_case():
    """Known components at known heights: each threshold's lesion sensitivity and false positives are exact."""
    from brainuad.evaluate import froc

    anomaly = np.zeros((30, 30, 30), np.float32)
    lesion = np.zeros((30, 30, 30), bool)
    lesion[2:6, 2:6, 2:6] = True  # lesion A, 64 voxels, found at height 0.9
    anomaly[2:6, 2:6, 2:6] = 0.9
    lesion[20:24, 20:24, 20:24] = True  # lesion B, found at height 0.5
    anomaly[20:24, 20:24, 20:24] = 0.5
    anomaly[10:13, 10:13, 10:13] = 0.7  # a false positive at 0.7
    anomaly[14:17, 2:5, 20:23] = 0.3  # a false positive at 0.3
    counts = froc.case_counts(anomaly, lesion, [0.8, 0.6, 0.4, 0.2], min_component_voxels=5, voxel_ml=0.008)
    assert counts.detected.sum(axis=1).tolist() == [1, 1, 2, 2]
    assert counts.false_positives.tolist() == [0, 1, 1, 2]
    assert counts.lesion_ml.tolist() == pytest.approx([0.512, 0.512])
    result = froc.curve([counts, counts])
    assert result["sensitivity"] == [0.5, 0.5, 1.0, 1.0]
    assert result["false_positives_per_scan"] == [0.0, 1.0, 1.0, 2.0]
    assert result["lesions"] == 4 and result["scans"] == 2
    assert froc.operating_point(result, target=1.0) == 0.4  # the most sensitive threshold within one FP per scan
    assert froc.operating_point(result, target=0.0) == 0.8
    summary = froc.summarise([counts], [counts], 0.6)
    point = summary["operating_points"]["fp_budget_3"]
    # Within 3 FPs, 0.4 and 0.2 both find every lesion: the one with fewer false positives is chosen.
    assert point["tuning"]["threshold"] == 0.4 and point["reported"]["sensitivity"] == 1.0
    # A low threshold where the map merges into one blob (1 FP, nothing hit) is not the "most sensitive" point.
    merged = {"thresholds": [0.9, 0.5, 0.1], "false_positives_per_scan": [0.0, 2.0, 1.0]}
    merged["sensitivity"] = [0.0, 0.6, 0.0]
    assert froc.operating_point(merged) == 0.5
