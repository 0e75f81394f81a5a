import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from brainuad.errors import InputError, OutputError
from brainuad.io.volumes import (
    Volume,
    atomic_path,
    find_nifti_files,
    load_volume,
    read_grid,
    save_volume,
    strip_nifti_suffix,
)
from conftest import lps_affine, write_nifti


def test_load_reorients_to_ras_and_save_restores_source_order(tmp_path, rng):
    shape = (10, 12, 8)
    data = rng.normal(size=shape).astype(np.float32)
    affine = lps_affine(shape)
    src = write_nifti(tmp_path / "in.nii.gz", data, affine)

    vol = load_volume(src)
    assert vol.source_axcodes == ("L", "P", "S")
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    # The same world point holds the same value in both orders.
    voxel_src = np.array([2, 3, 4])
    world = affine[:3, :3] @ voxel_src + affine[:3, 3]
    voxel_ras = np.round(np.linalg.solve(vol.affine[:3, :3], world - vol.affine[:3, 3])).astype(int)
    assert vol.array[tuple(voxel_ras)] == pytest.approx(data[tuple(voxel_src)])

    out = save_volume(vol, tmp_path / "out.nii.gz")
    back = nib.load(str(out))
    assert nib.aff2axcodes(back.affine) == ("L", "P", "S")
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.get_fdata(), data, rtol=1e-6)


def test_mask_and_label_kinds(tmp_path):
    labels = np.zeros((6, 6, 6), np.int16)
    labels[1:3, 1:3, 1:3] = 4
    path = write_nifti(tmp_path / "seg.nii.gz", labels)
    assert load_volume(path, "label").array.max() == 4
    mask = load_volume(path, "mask")
    assert mask.array.dtype == bool and mask.array.sum() == 8
    floats = write_nifti(tmp_path / "soft.nii.gz", labels.astype(np.float32) * 0.3)
    with pytest.raises(InputError, match="non-integer"):
        load_volume(floats, "label")


def test_bool_volume_saves_as_uint8(tmp_path):
    vol = Volume(np.ones((4, 4, 4), bool), np.eye(4))
    out = save_volume(vol, tmp_path / "m.nii.gz")
    assert nib.load(str(out)).get_data_dtype() == np.uint8


def _zero_voxel_size(path):
    img = nib.Nifti1Image(np.random.rand(6, 6, 6).astype(np.float32), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(np.diag([0.0, 1, 1, 1]), code=1)
    nib.save(img, str(path))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(os.urandom(2048)), "not a readable NIfTI"),
        (lambda p: write_nifti(p, np.zeros((8, 8, 1), np.float32) + np.arange(8)[:, None, None]), "2D"),
        (lambda p: write_nifti(p, np.random.rand(6, 6, 6, 3).astype(np.float32)), "4D series with 3 volumes"),
        (lambda p: write_nifti(p, np.full((6, 6, 6), np.nan, np.float32)), "NaN or Inf"),
        (lambda p: write_nifti(p, np.full((6, 6, 6), 3.0, np.float32)), "constant"),
        (lambda p: _zero_voxel_size(p), "voxel size|singular"),
        (lambda p: write_nifti(p, np.random.rand(6, 6, 6).astype(np.float32), np.diag([50, 1, 1, 1.0])), "voxel size"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        load_volume(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_reported(tmp_path, rng):
    good = write_nifti(tmp_path / "good.nii.gz", rng.random((40, 40, 40)).astype(np.float32))
    raw = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"truncated|corrupt|not a readable"):
        load_volume(bad)


def test_read_grid_uses_the_header_alone(tmp_path, rng):
    shape = (40, 36, 30)
    affine = lps_affine(shape)
    good = write_nifti(tmp_path / "good.nii.gz", rng.random(shape).astype(np.float32), affine)
    raw = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    for path in (good, cut):  # the voxels of the truncated copy cannot be read, its header can
        grid_shape, grid_affine = read_grid(path)
        assert grid_shape == shape  # as stored, not reoriented
        np.testing.assert_allclose(grid_affine, affine, atol=1e-5)
    with pytest.raises(InputError, match="not found"):
        read_grid(tmp_path / "nope.nii.gz")


def test_missing_and_wrong_name(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_volume(tmp_path / "nope.nii.gz")
    png = tmp_path / "scan.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    with pytest.raises(InputError, match="not a NIfTI file name"):
        load_volume(png)


def test_renamed_png_is_not_nifti(tmp_path):
    fake = tmp_path / "scan.nii.gz"
    fake.write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\n" + b"0" * 400))
    with pytest.raises(InputError):
        load_volume(fake)


def test_4d_singleton_and_volume_index(tmp_path, rng):
    data = rng.random((5, 5, 5, 3)).astype(np.float32)
    path = write_nifti(tmp_path / "series.nii.gz", data)
    vol = load_volume(path, volume_index=2)
    np.testing.assert_allclose(vol.array, data[..., 2])
    single = write_nifti(tmp_path / "single.nii.gz", data[..., :1])
    assert load_volume(single).shape == (5, 5, 5)


def test_too_large_fails_before_reading(tmp_path, rng):
    path = write_nifti(tmp_path / "big.nii.gz", rng.random((20, 20, 20)).astype(np.float32))
    with pytest.raises(InputError, match="GiB"):
        load_volume(path, max_bytes=1000)


def test_save_never_overwrites_input(tmp_path, rng):
    path = write_nifti(tmp_path / "in.nii.gz", rng.random((5, 5, 5)).astype(np.float32))
    before = path.read_bytes()
    vol = load_volume(path)
    with pytest.raises(OutputError, match="overwrite"):
        save_volume(vol, path)
    assert path.read_bytes() == before


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_find_nifti_files_and_names(tmp_path):
    write_nifti(tmp_path / "a" / "x.nii.gz", np.random.rand(3, 3, 3).astype(np.float32))
    write_nifti(tmp_path / "b.nii", np.random.rand(3, 3, 3).astype(np.float32))
    (tmp_path / "notes.txt").write_text("hi")
    files = find_nifti_files([tmp_path])
    assert sorted(f.name for f in files) == ["b.nii", "x.nii.gz"]
    assert strip_nifti_suffix("sub-01_T2w.nii.gz") == "sub-01_T2w"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no \.nii"):
        find_nifti_files([empty])
    with pytest.raises(InputError, match="not found"):
        find_nifti_files([tmp_path / "missing.nii.gz"])


def test_no_orientation_is_refused_unless_stated(tmp_path):
    img = nib.Nifti1Image(np.random.rand(6, 8, 10).astype(np.float32), np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    path = tmp_path / "bare.nii.gz"
    nib.save(img, str(path))
    with pytest.raises(InputError, match=r"no orientation.*--assume-orientation"):
        load_volume(path)
    volume = load_volume(path, orientation="LPS")
    assert volume.source_axcodes == ("L", "P", "S") and volume.spacing == pytest.approx((2.0, 3.0, 4.0))
    with pytest.raises(InputError, match="not an orientation"):
        load_volume(path, orientation="LRS")
    out = save_volume(volume.with_array(volume.array * 2), tmp_path / "out.nii.gz")
    header = nib.load(str(out)).header
    assert int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0  # no orientation claimed
