import json

import nibabel as nib
import numpy as np
import pytest

from brainuad.cli import main
from brainuad.config import PreprocessConfig
from brainuad.errors import InputError
from brainuad.io.volumes import load_volume
from brainuad.preprocess.pipeline import (
    case_names,
    intensity_range,
    is_case_folder,
    load_case,
    preprocess_batch,
    preprocess_file,
    scale_intensity,
)
from conftest import write_nifti


def test_intensity_range_ignores_outliers():
    rng = np.random.default_rng(0)
    values = rng.normal(100, 10, 100_000)
    values[:20] = 32767  # like the BraTS case with saturated voxels
    low, high = intensity_range(values, "percentile", (0.5, 99.5))
    assert 70 < low < 80 and 120 < high < 130
    assert intensity_range(values, "minmax") == (pytest.approx(values.min()), 32767)
    with pytest.raises(ValueError, match="constant"):
        intensity_range(np.ones(10))


def test_scale_intensity_known_answer():
    array = np.array([[[0.0, 5.0, 10.0, 20.0]]])
    mask = np.array([[[False, True, True, True]]])
    np.testing.assert_allclose(scale_intensity(array, mask, 0.0, 10.0), [[[0.0, 0.5, 1.0, 1.0]]])


def test_case_names_disambiguate_by_folder(tmp_path):
    paths = [
        tmp_path / "ms" / "patient07" / "T2.nii.gz",
        tmp_path / "ms" / "patient08" / "T2.nii.gz",
        tmp_path / "x" / "IXI002-T2.nii.gz",
    ]
    names = case_names(paths)
    assert names[paths[0]] == "patient07_T2" and names[paths[1]] == "patient08_T2"
    assert names[paths[2]] == "IXI002-T2"


def test_preprocess_file_writes_a_complete_case(skull_stripped_scan, tmp_path):
    status, folder = preprocess_file(skull_stripped_scan, tmp_path, PreprocessConfig())
    assert status == "done" and is_case_folder(folder)
    case = load_case(folder)
    assert case.image.shape == (160, 192, 96)
    assert case.image.array.min() >= 0.0 and case.image.array.max() <= 1.0
    assert case.image.array[~case.brain_mask.array].max() == 0.0
    record = json.loads((folder / "record.json").read_text())
    assert record["skull_strip_method"] == "none"
    assert record["qc"]["registration_inside_template"] > 0.95
    assert record["input"]["sha256"] and record["provenance"]["versions"]["nibabel"]
    # The transform found is the one used to make the scan (4, -6, 3 mm shift).
    np.testing.assert_allclose(case.transform.mni_to_native[:3, 3], [4.0, -6.0, 3.0], atol=1.5)
    # Native outputs overlay the input: same shape and affine in the file.
    native_path = folder / "back.nii.gz"
    from brainuad.io.volumes import save_volume

    save_volume(case.to_native(case.brain_mask.array.astype(np.uint8), order=0), native_path)
    src, out = nib.load(str(skull_stripped_scan)), nib.load(str(native_path))
    assert src.shape == out.shape
    np.testing.assert_allclose(src.affine, out.affine, atol=1e-5)
    native_mask = load_volume(native_path, "mask").array
    original = load_volume(skull_stripped_scan).array > 0
    dice = 2 * (native_mask & original).sum() / (native_mask.sum() + original.sum())
    assert dice > 0.9  # the crop loses some slices; what remains lands on the brain

    again, _ = preprocess_file(skull_stripped_scan, tmp_path, PreprocessConfig())
    assert again == "skipped"
    changed, _ = preprocess_file(skull_stripped_scan, tmp_path, PreprocessConfig(preset="whole-brain"))
    assert changed == "done"


def test_batch_reports_bad_case_and_continues(skull_stripped_scan, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.nii.gz").write_bytes(skull_stripped_scan.read_bytes())
    write_nifti(inputs / "flat.nii.gz", np.zeros((20, 20, 20), np.float32))
    result = preprocess_batch([inputs], tmp_path / "out", progress=False)
    assert [p.name for p in result.done] == ["good"]
    assert len(result.failed) == 1 and "flat.nii.gz" in result.failed[0][1] and "constant" in result.failed[0][1]
    assert not (tmp_path / "out" / "flat").exists()
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_cli_preprocess_exit_codes(skull_stripped_scan, tmp_path, capsys):
    bad = write_nifti(tmp_path / "bad.nii.gz", np.zeros((8, 8, 8), np.float32))
    assert main(["preprocess", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "bad.nii.gz" in capsys.readouterr().err
    code = main(
        ["preprocess", str(skull_stripped_scan), "--out", str(tmp_path / "o"), "--quiet", "--skull-strip", "none"]
    )
    assert code == 0
    assert "1 done" in capsys.readouterr().out


def test_no_brain_is_a_clear_error(tmp_path):
    from brainuad.preprocess.pipeline import preprocess_volume

    array = np.zeros((40, 40, 40), np.float32)
    array[18:22, 18:22, 18:22] = np.arange(1, 65, dtype=np.float32).reshape(4, 4, 4)  # 0.064 mL "brain"
    with pytest.raises(InputError, match="no brain"):
        preprocess_volume(
            load_volume(write_nifti(tmp_path / "tiny.nii.gz", array)), PreprocessConfig(skull_strip="none")
        )


def test_parallel_batch_matches_serial(skull_stripped_scan, tmp_path):
    inputs = tmp_path / "in"
    for name in ("a", "b"):
        (inputs / name).mkdir(parents=True)
        (inputs / name / "scan.nii.gz").write_bytes(skull_stripped_scan.read_bytes())
    result = preprocess_batch([inputs], tmp_path / "out", jobs=2, progress=False)
    assert result.ok and sorted(p.name for p in result.done) == ["a_scan", "b_scan"]
    a, b = load_case(tmp_path / "out" / "a_scan"), load_case(tmp_path / "out" / "b_scan")
    # ANTs' registration is not bit-reproducible (see registration.estimate_transform): same input, same settings,
    # separate processes give transforms within about a millimetre.
    points = np.array([[x, y, z, 1.0] for x in (-50, 50) for y in (-70, 40) for z in (-30, 50)])
    moved = points @ a.transform.mni_to_native.T - points @ b.transform.mni_to_native.T
    assert np.linalg.norm(moved[:, :3], axis=1).max() < 1.5
    assert np.corrcoef(a.image.array.ravel(), b.image.array.ravel())[0, 1] > 0.99
