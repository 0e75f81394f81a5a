import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from brainuad.io.volumes import Volume
from brainuad.preprocess.registration import (
    Transform,
    estimate_transform,
    fraction_outside_grid,
    native_to_mni,
    registration_overlap,
    to_native,
)
from brainuad.preprocess.templates import CROP_GRIDS, Grid, crop_grid, mni_brain_mask, mni_template


def rigid(degrees_xyz, shift_mm) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", degrees_xyz, degrees=True).as_matrix()
    matrix[:3, 3] = shift_mm
    return matrix


def native_grid(shape=(80, 96, 72), spacing=2.0) -> np.ndarray:
    """A 2 mm grid centred on the world origin."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2
    return affine


def synthetic_scan(truth: np.ndarray, shape=(80, 96, 72)) -> tuple[Volume, Transform]:
    """The MNI template resampled onto a native 2 mm grid through a known MNI → native transform."""
    template = mni_template("t1")
    affine = native_grid(shape)
    truth_transform = Transform(truth, affine, shape, ("R", "A", "S"))
    template_grid = Grid("t", template.shape, tuple(map(tuple, template.affine)))
    # Resample template → native: native voxel → native world → MNI world (inverse of truth) → template voxel.
    array = to_native(template.array, truth_transform, template_grid, order=1).array
    return Volume(array, affine), truth_transform


def test_transform_json_round_trip():
    t = Transform(rigid((5, 0, 3), (1, 2, 3)), native_grid(), (80, 96, 72), ("L", "P", "S"), "rigid")
    back = Transform.from_dict(t.to_dict())
    np.testing.assert_allclose(back.mni_to_native, t.mni_to_native)
    assert back.native_shape == t.native_shape and back.native_axcodes == t.native_axcodes
    with pytest.raises(ValueError):
        Transform.from_dict({**t.to_dict(), "mni_to_native": np.zeros((4, 4)).tolist()})


def test_crop_grids_are_divisible_by_16_and_whole_brain_covers_the_brain():
    for grid in CROP_GRIDS.values():
        assert all(s % 16 == 0 for s in grid.shape)
    mask = mni_brain_mask()
    identity = Transform(np.eye(4), mask.affine, mask.shape, ("R", "A", "S"))
    assert fraction_outside_grid(mask.array, identity, crop_grid("whole-brain")) == 0.0
    lost = fraction_outside_grid(mask.array, identity, crop_grid("paper"))
    assert 0.05 < lost < 0.4  # the paper's 96 slices do not cover the whole brain


def test_label_round_trip_native_mni_native_keeps_dice(rng):
    shape = (80, 96, 72)
    affine = native_grid(shape)
    transform = Transform(rigid((8, -5, 4), (3, -6, 5)), affine, shape, ("R", "A", "S"))
    labels = np.zeros(shape, np.uint8)
    labels[30:50, 40:60, 30:45] = 1  # a 40×40×30 mm block, well inside the crop
    grid = crop_grid("whole-brain")
    mni = native_to_mni(labels.astype(np.float32), transform, grid, order=1) > 0.5
    back = to_native(mni.astype(np.uint8), transform, grid, order=0).array > 0
    dice = 2 * np.logical_and(back, labels > 0).sum() / (back.sum() + labels.sum())
    assert dice >= 0.95


def test_registration_recovers_a_known_rigid_transform():
    truth = rigid((6, -4, 5), (5.0, -8.0, 6.0))
    scan, _ = synthetic_scan(truth)
    estimated = estimate_transform(scan, "rigid", "t1", seed=0)
    # Compare where both transforms send points spread over the brain.
    points = np.array([[x, y, z, 1.0] for x in (-50, 50) for y in (-70, 40) for z in (-30, 50)])
    error = np.linalg.norm((points @ truth.T - points @ estimated.mni_to_native.T)[:, :3], axis=1)
    assert error.max() < 2.0, error
    overlap = registration_overlap(scan.array > 0.05, estimated)
    assert overlap["inside"] > 0.97 and overlap["dice"] > 0.9


def test_registration_overlap_drops_when_misregistered():
    mask = mni_brain_mask()
    identity = Transform(np.eye(4), mask.affine, mask.shape, ("R", "A", "S"))
    good = registration_overlap(mask.array, identity)
    shifted = Transform(rigid((0, 0, 0), (0, 30, 0)), mask.affine, mask.shape, ("R", "A", "S"))
    bad = registration_overlap(mask.array, shifted)
    assert good["dice"] > 0.99 and good["inside"] > 0.99
    assert bad["inside"] < 0.85 and bad["dice"] < 0.8


def test_to_native_rejects_wrong_shapes():
    t = Transform(np.eye(4), native_grid(), (80, 96, 72), ("R", "A", "S"))
    with pytest.raises(ValueError, match="shape"):
        to_native(np.zeros((3, 3, 3)), t, crop_grid("paper"))


def test_t2_contrast_registers_to_the_t1_template_by_mutual_information():
    from brainuad.preprocess.templates import tissue_contrast_template

    truth = rigid((-5, 3, -4), (-6.0, 4.0, -5.0))
    t2_like = tissue_contrast_template(csf=1.0, grey=0.55, white=0.3)
    grid = Grid("t", t2_like.shape, tuple(map(tuple, t2_like.affine)))
    shape = (80, 96, 72)
    native = to_native(t2_like.array, Transform(truth, native_grid(shape), shape, ("R", "A", "S")), grid).array
    estimated = estimate_transform(Volume(native, native_grid(shape)), "rigid", "t1", seed=0)
    points = np.array([[x, y, z, 1.0] for x in (-50, 50) for y in (-70, 40) for z in (-30, 50)])
    error = np.linalg.norm((points @ truth.T - points @ estimated.mni_to_native.T)[:, :3], axis=1)
    assert error.max() < 3.0, error


def test_rigid_part_of_an_affine():
    from brainuad.preprocess.registration import rigid_part

    rotation = rigid((10, -5, 20), (0, 0, 0))
    affine = rotation @ np.diag([1.1, 0.9, 1.05, 1.0])
    affine[:3, 3] = [3.0, -4.0, 5.0]
    centre = np.array([0.0, -18.0, 18.0])
    result = rigid_part(affine, centre)
    np.testing.assert_allclose(result[:3, :3], rotation[:3, :3], atol=0.02)
    np.testing.assert_allclose(result[:3, :3] @ result[:3, :3].T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose((result @ [*centre, 1])[:3], (affine @ [*centre, 1])[:3], atol=1e-9)
