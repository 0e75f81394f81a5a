"""Preprocessing on the real MRI in ../shared/data (skipped when it is absent)."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from brainuad.config import PreprocessConfig
from brainuad.io.volumes import Volume, load_volume
from brainuad.preprocess.pipeline import load_case, preprocess_file
from brainuad.preprocess.registration import estimate_transform, native_to_mni, registration_overlap, to_native
from brainuad.preprocess.skullstrip import deepbet_mask, embed_brain_in_head, skull_strip
from brainuad.preprocess.templates import crop_grid

pytestmark = pytest.mark.real

SCANS = {
    "stroke_t2_head": "stroke/T2_head.nii.gz",
    "ixi012_t1_head": "healthy/IXI012-HH-1211-T1_2mm_head.nii.gz",
    "ixi002_t2_brain": "healthy/IXI002-Guys-0828-T2_brain.nii.gz",
    "brats_t2_sri24": "brats2018/Brats18_2013_3_1/Brats18_2013_3_1_t2.nii.gz",
    "ms_t2_mni": "ms/patient07/T2.nii.gz",
}
# Points spread over the brain (MNI mm), for comparing transforms.
POINTS = np.array([[x, y, z, 1.0] for x in (-50, 50) for y in (-70, 40) for z in (-30, 50)])


def max_displacement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((POINTS @ a.T - POINTS @ b.T)[:, :3], axis=1).max())


@pytest.fixture(scope="module")
def cases(tmp_path_factory, request):
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip("real data (../shared/data) not available")
    out = tmp_path_factory.mktemp("preprocessed")
    folders = {}
    for name, rel in SCANS.items():
        _, folders[name] = preprocess_file(SHARED_DATA / rel, out, PreprocessConfig(), name=name)
    return {name: load_case(folder) for name, folder in folders.items()}


@pytest.mark.parametrize("name", list(SCANS))
def test_real_scans_land_in_mni(cases, name):
    case = cases[name]
    qc = case.record["qc"]
    print(name, json.dumps(qc))
    assert qc["registration_inside_template"] >= 0.97
    assert qc["registration_mask_dice"] >= 0.7
    assert 900 <= qc["brain_volume_ml"] <= 1900
    assert 0.0 <= qc["brain_fraction_outside_crop"] < 0.2  # the paper crop loses the cerebellum and vertex
    expected = "none" if name in ("ixi002_t2_brain", "brats_t2_sri24", "ms_t2_mni") else "deepbet"
    assert case.record["skull_strip_method"] == expected


def test_scan_already_in_mni_gets_an_identity_transform(cases):
    # The MS scan was registered to MNI152 by its authors: our transform must be (nearly) the identity.
    assert max_displacement(cases["ms_t2_mni"].transform.mni_to_native, np.eye(4)) < 4.0


@pytest.mark.parametrize("name", ["stroke_t2_head", "brats_t2_sri24", "ixi012_t1_head"])
def test_registration_recovers_a_known_header_perturbation(cases, shared_data, name):
    """Rotate and shift the scan's header by a known amount: registration must find the same anatomy."""
    case = cases[name]
    volume = load_volume(shared_data / SCANS[name])
    brain = volume.with_array(np.where(case.brain_mask_native.array, volume.array, 0.0).astype(np.float32))
    moved = np.eye(4)
    moved[:3, :3] = Rotation.from_euler("xyz", (8, -6, 10), degrees=True).as_matrix()
    moved[:3, 3] = (12.0, -9.0, 7.0)
    perturbed = Volume(brain.array, moved @ brain.affine)
    transform = estimate_transform(perturbed, "rigid", "t1", seed=0)
    # The same MNI point must map to the same voxel: compose the known header change.
    assert max_displacement(transform.mni_to_native, moved @ case.transform.mni_to_native) < 3.0


def test_lesion_round_trip_native_mni_native(shared_data):
    image = load_volume(shared_data / "stroke/T2_head.nii.gz")
    lesion = load_volume(shared_data / "stroke/lesion.nii.gz", "mask")
    mask, _ = skull_strip(image, "deepbet")
    transform = estimate_transform(image.with_array(np.where(mask, image.array, 0.0)), "rigid", "t1")
    grid = crop_grid("whole-brain")
    lesion_mni = native_to_mni(lesion.array.astype(np.float32), transform, grid, order=1) > 0.5
    back = to_native(lesion_mni.astype(np.uint8), transform, grid, order=0).array > 0
    dice = 2 * (back & lesion.array).sum() / (back.sum() + lesion.array.sum())
    print("stroke lesion round-trip Dice", dice)
    assert dice >= 0.95
    assert registration_overlap(mask, transform)["inside"] > 0.97


def test_default_stripper_agrees_with_hdbet_on_ixi002(shared_data):
    """IXI002's T2 ships with an HD-BET mask; re-embed the brain in a real T2 head (the stroke scan's skull)."""
    t2 = load_volume(shared_data / "healthy/IXI002-Guys-0828-T2_brain.nii.gz")
    reference = load_volume(shared_data / "healthy/IXI002-Guys-0828-T2_brainmask.nii.gz", "mask").array
    dice = lambda m: 2 * (m & reference).sum() / (m.sum() + reference.sum())  # noqa: E731
    assert dice(deepbet_mask(t2)) >= 0.95  # on the stripped scan itself

    head = load_volume(shared_data / "stroke/T2_head.nii.gz")
    composite = embed_brain_in_head(t2, reference, head)
    agreement = dice(deepbet_mask(composite))
    print("deepbet vs HD-BET on IXI002 re-embedded in a head: Dice", agreement)
    assert agreement >= 0.9


@pytest.mark.parametrize("rel", ["stroke/T2_head.nii.gz", "healthy/IXI015-HH-1258-T1_2mm_head.nii.gz"])
def test_skull_stripping_heads_gives_plausible_brains(shared_data, rel):
    head = load_volume(shared_data / rel)
    mask, method = skull_strip(head, "auto")
    assert method == "deepbet"
    volume_ml = mask.sum() * head.voxel_volume_ml
    head_ml = (head.array > 0.1 * np.percentile(head.array, 99)).sum() * head.voxel_volume_ml
    assert 1000 <= volume_ml <= 1900 and volume_ml < 0.8 * head_ml
    # The brain sits inside the head, away from the left and right edges (skull and scalp lie between).
    assert not mask[[0, -1]].any()
