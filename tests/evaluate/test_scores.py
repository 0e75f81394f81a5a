"""Slice scores that do not grow with brain area, lesion matching, scan-level triage: synthetic volumes with known
answers."""

import numpy as np
import pytest

from brainuad.evaluate import metrics, scores
from brainuad.infer.calibration import SliceReference
from brainuad.infer.postprocessing import segment, segmented_area, slice_errors, slice_means, slice_percentile


def _brain_growing_along_slices(shape=(32, 32, 16)):
    """A brain whose axial area grows from slice to slice (a few voxels at the bottom, most of the slice on top)."""
    brain = np.zeros(shape, bool)
    for u in range(2, shape[2] - 2):
        half = 2 + u
        brain[16 - half : 16 + half, 16 - half : 16 + half, u] = True
    return brain


def test_slice_scores_are_invariant_to_brain_area_for_a_uniform_residual():
    brain = _brain_growing_along_slices()
    anomaly = np.where(brain, 0.3, 0.0).astype(np.float32)
    inside = brain.any(axis=(0, 1))
    area = brain.sum(axis=(0, 1))
    # The paper's e(u) grows with the slice's brain area: the bigger slices look "more abnormal".
    eu = slice_errors(anomaly)
    assert np.allclose(eu[inside], 0.3 * area[inside]) and eu[inside].max() > 5 * eu[inside].min()
    # The levels do not.
    np.testing.assert_allclose(slice_percentile(anomaly, brain, 99)[inside], 0.3, rtol=1e-6)
    np.testing.assert_allclose(slice_means(anomaly, brain)[inside], 0.3, rtol=1e-6)
    assert np.all(slice_percentile(anomaly, brain)[~inside] == 0) and np.all(slice_means(anomaly, brain)[~inside] == 0)
    # Calibrated z: healthy scans with a uniform residual of their own level; e(u) and its spread scale with area.
    healthy = np.stack([slice_errors(np.where(brain, level, 0.0)) for level in (0.08, 0.1, 0.12)])
    reference = SliceReference(tuple(healthy.mean(0).tolist()), tuple(healthy.std(0).tolist()))
    z = scores.map_slice_scores(anomaly, brain, reference)["calibrated_z"]
    np.testing.assert_allclose(z[inside], z[inside][0], rtol=1e-6)
    assert z[inside][0] > 10
    # Below the threshold nothing is segmented, whatever the area.
    labels, _ = segment(anomaly, 0.5, 3)
    assert np.all(segmented_area(labels, 0.008) == 0)


def test_slice_scores_rank_a_small_lesion_above_large_normal_slices():
    rng = np.random.default_rng(0)
    brain = _brain_growing_along_slices()
    anomaly = np.where(brain, rng.uniform(0.05, 0.15, brain.shape), 0.0).astype(np.float32)
    anomaly[14:17, 14:17, 4] = 0.9  # a small lesion in a small slice
    labels = np.zeros(brain.shape[2], bool)
    labels[4] = True
    counted = brain.any(axis=(0, 1))
    computed = scores.map_slice_scores(anomaly, brain, None)
    assert metrics.average_precision(labels[counted], computed["p99"][counted]) == pytest.approx(1.0)
    assert metrics.average_precision(labels[counted], computed["paper_eu"][counted]) < 0.5
    name, aps = scores.choose_slice_score([labels[counted]], [{k: v[counted] for k, v in computed.items()}])
    assert name in ("mean", "p99") and aps[name] == pytest.approx(1.0) and aps["paper_eu"] < 0.5


def _labels(mask):
    return segment(mask.astype(np.float32), 0.5, 1)


def test_lesion_matching_split_merged_missed_and_false_positive():
    shape = (40, 40, 20)
    reference = np.zeros(shape, bool)
    reference[2:10, 2:10, 2:8] = True  # A: found in two pieces (split)
    reference[20:24, 2:6, 2:6] = True  # B and C: one component covers both (merged)
    reference[28:32, 2:6, 2:6] = True
    reference[2:5, 30:33, 12:15] = True  # D: missed
    predicted = np.zeros(shape, bool)
    predicted[3:5, 3:5, 3:5] = True
    predicted[7:9, 7:9, 3:5] = True
    predicted[21:31, 3:5, 3:5] = True
    predicted[30:35, 30:35, 14:18] = True  # touches nothing: a false positive
    match = metrics.match_lesions(*_labels(predicted), *_labels(reference))
    assert match.reference_count == 4 and match.predicted_count == 4
    missed = match.reference_labels[3, 31, 13]  # D's label
    assert match.reference_detected.sum() == 3 and not match.reference_detected[missed - 1]
    assert match.predicted_true.sum() == 3 and match.false_positives == 1
    anomaly = np.where(predicted, 0.9, 0.1).astype(np.float32)
    spacing = 0.05 ** (1 / 3) * 10  # a voxel of 0.05 mL
    rows = scores.lesion_rows("c", match, anomaly, np.diag([spacing, spacing, spacing, 1.0]))
    summary = scores.lesion_summary(rows, cases=1, min_reference_ml=0.0)
    assert summary["reference_lesions"] == 4 and summary["detected"] == 3
    assert summary["sensitivity"] == pytest.approx(0.75) and summary["false_positives_per_scan"] == 1
    # Volumes 8·8·6·0.05 = 19.2 mL (> 10), 4·4·4·0.05 = 3.2 mL (1–10, twice), 27·0.05 = 1.35 mL (1–10, missed).
    assert summary["by_size"][">10 mL"] == {"lesions": 1, "detected": 1, "sensitivity": 1.0}
    assert summary["by_size"]["1-10 mL"]["lesions"] == 3 and summary["by_size"]["1-10 mL"]["detected"] == 2
    assert summary["by_size"]["<1 mL"]["lesions"] == 0
    fp = next(r for r in rows if r["kind"] == "predicted" and not r["matched"])
    assert fp["peak_score"] == pytest.approx(0.9) and fp["volume_ml"] == pytest.approx(5 * 5 * 4 * 0.05)


def test_scan_summary_separates_planted_abnormal_scans_from_healthy_ones():
    rng = np.random.default_rng(1)
    brain = _brain_growing_along_slices()

    def scan(lesion: bool) -> dict:
        anomaly = np.where(brain, rng.uniform(0.0, 0.2, brain.shape), 0.0).astype(np.float32)
        if lesion:
            anomaly[12:18, 12:18, 8:11] = 0.8
        labels, count = segment(anomaly, 0.5, 3)
        from brainuad.infer.inference import scan_score

        return {"p999": scan_score(anomaly, brain), "lesion_ml": float((labels > 0).sum() * 0.008), "components": count}

    patients = [scan(True) for _ in range(4)]
    healthy = [scan(False) | {"name": f"h{i}"} for i in range(5)]
    summary = scores.scan_summary(patients, healthy, resamples=50)
    assert summary["auroc"] == pytest.approx(1.0) and summary["ap"] == pytest.approx(1.0)
    assert summary["by_score"]["lesion_ml"]["auroc"] == pytest.approx(1.0)
    assert summary["patients"] == 4 and summary["healthy"] == 5
    fp = scores.healthy_summary(healthy)
    assert fp["false_positive_ml_mean"] == 0 and fp["scans_with_any_finding"] == 0
    assert scores.percentile_among(patients[0]["p999"], [h["p999"] for h in healthy]) == 100.0
