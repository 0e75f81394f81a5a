import numpy as np
import pytest
from scipy import ndimage

from brainuad.infer.postprocessing import (
    anomaly_map,
    calibrated_slice_scores,
    erode_mask,
    median_filter_3d,
    normality_scores,
    segment,
    slice_errors,
)


@pytest.mark.parametrize("size", [3, 5])
def test_median_filter_matches_scipy(rng, size):
    volume = rng.random((20, 24, 16)).astype(np.float32)
    expected = ndimage.median_filter(volume, size=size, mode="nearest")
    np.testing.assert_array_equal(median_filter_3d(volume, size), expected)
    mask = rng.random(volume.shape) > 0.5
    masked = median_filter_3d(volume, size, mask=mask)
    np.testing.assert_array_equal(masked[mask], expected[mask])
    assert not masked[~mask].any()


def test_median_filter_removes_speckle_keeps_blobs():
    volume = np.zeros((20, 20, 20), np.float32)
    volume[3, 3, 3] = 1.0  # isolated voxel: noise
    volume[8:16, 8:16, 8:16] = 1.0  # 8³ blob: a lesion
    filtered = median_filter_3d(volume, 5)
    assert filtered[3, 3, 3] == 0.0 and filtered[12, 12, 12] == 1.0
    with pytest.raises(ValueError, match="odd"):
        median_filter_3d(volume, 4)


def test_normality_scores_known_answers():
    np.testing.assert_array_equal(normality_scores(np.full(10, 3.0)), np.ones(10))  # constant error: none stands out
    errors = np.ones(10)
    errors[4] = 11.0  # one bright slice
    scores = normality_scores(errors)
    assert scores[4] == 0.0 and np.all(scores[np.arange(10) != 4] == 1.0)
    np.testing.assert_allclose(normality_scores(np.array([0.0, 5.0, 10.0])), [1.0, 0.5, 0.0])


def test_slice_errors_and_calibration():
    anomaly = np.zeros((4, 4, 3))
    anomaly[..., 1] = 0.5
    np.testing.assert_allclose(slice_errors(anomaly), [0.0, 8.0, 0.0])
    z = calibrated_slice_scores(np.array([1.0, 3.0]), np.array([1.0, 1.0]), np.array([1.0, 0.5]))
    np.testing.assert_allclose(z, [0.0, 4.0])
    with pytest.raises(ValueError):
        calibrated_slice_scores(np.ones(3), np.ones(2), np.ones(2))


def test_segment_drops_small_components():
    anomaly = np.zeros((30, 30, 30), np.float32)
    anomaly[5:10, 5:10, 5:10] = 1.0  # 125 voxels
    anomaly[20, 20, 20] = 1.0  # 1 voxel
    anomaly[20:22, 25:27, 25:27] = 0.4  # below threshold
    labels, count = segment(anomaly, threshold=0.5, min_voxels=20)
    assert count == 1 and (labels > 0).sum() == 125


def test_anomaly_map_pipeline():
    image = np.zeros((24, 24, 24), np.float32)
    brain = np.zeros_like(image, bool)
    brain[2:22, 2:22, 2:22] = True
    image[brain] = 0.5
    image[9:15, 9:15, 9:15] = 1.0  # a bright lesion the "model" does not reproduce
    reconstruction = np.where(brain, 0.5, 0.0).astype(np.float32)
    result = anomaly_map(image, reconstruction, brain, median_size=5, erosion=2)
    assert result[12, 12, 12] == pytest.approx(0.5)
    assert not result[~erode_mask(brain, 2)].any()
    assert result[4, 4, 4] == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        anomaly_map(image, reconstruction[:-1], brain)


def test_postprocessing_sizes_are_kept_in_millimetres():
    from brainuad.infer.postprocessing import postprocessing_sizes

    paper = postprocessing_sizes(1.0)
    assert (paper.median_size, paper.erosion_voxels, paper.min_component_voxels) == (5, 2, 20)
    coarse = postprocessing_sizes(2.0)
    assert (coarse.median_size, coarse.erosion_voxels, coarse.min_component_voxels) == (3, 1, 3)
    assert postprocessing_sizes(1.5).median_size % 2 == 1


def test_describe_lesions_measures_each_component_in_both_spaces():
    from brainuad.infer.postprocessing import describe_lesions

    labels = np.zeros((10, 10, 10), np.int32)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[5:9, 5:9, 5:9] = 2  # 64 voxels
    anomaly = np.where(labels == 2, 0.5, 0.0).astype(np.float32)
    anomaly[6, 6, 6] = 0.9
    anomaly[labels == 1] = 0.2
    mni = np.diag([2.0, 2.0, 2.0, 1.0])
    mni[:3, 3] = -10.0
    native = np.diag([1.0, 2.0, 2.0, 1.0])  # the same labels on a grid twice as fine along x
    rows = describe_lesions(labels, anomaly, mni, np.repeat(labels, 2, axis=0), native)
    assert [r["id"] for r in rows] == [2, 1]  # largest first
    big, small = rows
    assert big["volume_ml_mni"] == pytest.approx(64 * 8 / 1000) and small["volume_ml_mni"] == pytest.approx(0.064)
    assert big["volume_ml_native"] == pytest.approx(128 * 4 / 1000)
    assert big["centroid_mni_mm"] == [3.0, 3.0, 3.0]  # voxel 6.5 → 2 * 6.5 - 10
    assert big["centroid_native_mm"] == [13.5, 13.0, 13.0]
    assert big["peak_score"] == pytest.approx(0.9) and big["mean_score"] == pytest.approx((63 * 0.5 + 0.9) / 64)
    assert small["mean_score"] == pytest.approx(0.2)
    assert describe_lesions(np.zeros_like(labels), anomaly, mni) == []
    (only,) = describe_lesions(labels * (labels == 1), anomaly, mni)
    assert only["volume_ml_native"] is None and only["centroid_native_mm"] is None


def test_hysteresis_grows_a_seed_into_its_region_and_needs_a_seed():
    """Delineation (issue #34): a finding needs a voxel above the strict threshold; it then extends over the connected
    region above the extent level. A region above the extent level with no seed is no finding."""
    anomaly = np.zeros((30, 30, 30), np.float32)
    anomaly[2:12, 2:12, 2:12] = 0.3  # a lesion's faint extent (1000 voxels)…
    anomaly[6:8, 6:8, 6:8] = 0.9  # …around a bright core (8 voxels)
    anomaly[18:28, 18:28, 18:28] = 0.3  # a faint region with no core (normal anatomy, say)
    core, n_core = segment(anomaly, 0.5, min_voxels=1)
    assert n_core == 1 and (core > 0).sum() == 8  # the strict level alone draws the core only
    grown, n_grown = segment(anomaly, 0.5, min_voxels=1, extent=0.2)
    assert n_grown == 1 and (grown > 0).sum() == 1000  # the whole region, one finding
    assert not grown[18:28, 18:28, 18:28].any()  # no seed, no finding
    assert segment(anomaly, 0.5, min_voxels=1, extent=0.95)[0].sum() == core.sum()  # an extent above: the core
    empty = segment(np.where(anomaly > 0.5, 0.3, anomaly), 0.5, min_voxels=1, extent=0.2)
    assert empty[1] == 0 and not empty[0].any()  # nothing above the threshold: nothing at all
