"""Healthy calibration keeps healthy scans clean: the threshold rises until their median flagged volume, after the
post-processing detect applies, is within the stated budget."""

import numpy as np

from brainuad.evaluate.calibrate import _within_healthy_budget
from brainuad.infer.postprocessing import PostprocessingSizes


def test_threshold_rises_until_healthy_scans_are_within_the_budget():
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(5):
        anomaly = rng.random((40, 40, 40)).astype(np.float32) * 0.5
        anomaly[5:15, 5:15, 5:15] = 0.8  # 1000 voxels = 1 mL at 1 mm: a "finding" on every healthy scan
        anomaly[30:33, 30:33, 30:33] = 0.95  # 27 voxels
        maps.append(anomaly)
    sizes = PostprocessingSizes(median_size=1, erosion_voxels=0, min_component_voxels=20)
    threshold, flagged = _within_healthy_budget(maps, 0.6, sizes, 0.001, None)
    assert threshold == 0.6 and np.median(flagged) > 1.0  # the voxel rate alone: over 1 mL on every scan
    threshold, flagged = _within_healthy_budget(maps, 0.6, sizes, 0.001, 0.5)
    assert 0.8 <= threshold < 0.95 and np.median(flagged) == 0.027  # the 1 mL block is gone, the small one stays
    threshold, flagged = _within_healthy_budget(maps, 0.6, sizes, 0.001, 0.0)
    assert threshold >= 0.95 and max(flagged) == 0.0
