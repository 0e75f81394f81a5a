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


def test_healthy_spread_is_smooth_positive_and_floored():
    import pytest

    from brainuad.infer.postprocessing import healthy_spread

    brain = np.zeros((20, 20, 20), bool)
    brain[2:18, 2:18, 2:18] = True
    maps = [np.where(brain, 0.1, 0.0).astype(np.float32) for _ in range(3)]
    for m in maps:
        m[8:12, 8:12, 8:12] = 1.0  # a place every healthy scan lights up (an edge the model always misses)
    spread = healthy_spread(maps, [brain] * 3)
    assert spread.dtype == np.float32 and spread.shape == brain.shape and (spread > 0).all()
    assert spread[10, 10, 10] > 3 * spread[4, 4, 4]  # the always-bright place gets a large spread
    # Smoothed inside the brain only: its edge keeps the healthy level instead of being pulled towards the zeros.
    assert spread[2, 10, 10] == pytest.approx(0.1, rel=0.05)
    assert spread.min() >= 0.25 * np.median(spread[brain]) - 1e-7  # floored: outside every healthy brain too


def test_normalised_residual_divides_maps_and_is_never_stale(tmp_path):
    """``calibrate --normalise-residual`` saves the healthy spread (named by its content), every later map is divided
    by it, a changed file is refused naming it, and calibrating again without the flag removes it."""
    import pytest
    from safetensors.numpy import load_file, save_file

    from brainuad.config import Config, ModelConfig, TrainConfig
    from brainuad.errors import InputError
    from brainuad.evaluate.calibrate import RESIDUAL_SPREAD_GLOB, calibrate
    from brainuad.infer.trained import TrainedModel
    from brainuad.preprocess.cases import load_case
    from brainuad.train.loop import train
    from tiny import write_cases

    train_cases = write_cases(tmp_path / "train", 3, seed=1)
    healthy = write_cases(tmp_path / "healthy", 3, seed=2)
    run = tmp_path / "run"
    train([train_cases], run, Config(model=ModelConfig(kind="normative"), training=TrainConfig(device="cpu")),
          progress=False)  # fmt: skip
    plain = calibrate(run, [healthy], max_healthy_ml=None)
    raw = TrainedModel.load(run, "cpu").analyse(load_case(healthy / "case0")).anomaly
    fitted = calibrate(run, [healthy], max_healthy_ml=None, normalise_residual=True)
    spread_path = run / fitted.residual_spread
    assert [p.name for p in run.glob(RESIDUAL_SPREAD_GLOB)] == [spread_path.name]
    assert fitted.residual_spread_sha256[:12] in spread_path.name and len(fitted.residual_spread_sha256) == 64
    trained = TrainedModel.load(run, "cpu")
    spread = load_file(str(spread_path))["spread"]
    np.testing.assert_allclose(trained.analyse(load_case(healthy / "case0")).anomaly, raw / spread, rtol=1e-5)
    assert fitted.threshold != plain.threshold  # in units of the healthy spread now
    save_file({"spread": spread * 2}, str(spread_path))
    with pytest.raises(InputError, match=spread_path.name):
        TrainedModel.load(run, "cpu")
    calibrate(run, [healthy], max_healthy_ml=None)
    assert not list(run.glob(RESIDUAL_SPREAD_GLOB)) and TrainedModel.load(run, "cpu").spread is None
