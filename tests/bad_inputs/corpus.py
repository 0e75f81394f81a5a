"""The bad-input corpus: each kind is built in tmp_path from a valid scan (nothing binary is committed), with the
outcome every scan-reading verb must produce: ``ok`` (it works, perhaps with a warning) or an error message pattern
(it fails naming the file, exit code 1, no partial output, input untouched)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

#: (kind, verb) → outcome, filled by the tests and printed at the end of the run.
OUTCOMES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class BadKind:
    """One kind of bad input: how to build it and what must happen."""

    name: str
    build: Callable[[np.ndarray, np.ndarray, Path], Path]  # (data, affine, path) → the file to give the verb
    expect: str  # "ok" or a regex the error message must match
    target: str = "image"  # "image" or "label": which file of an evaluation case is bad


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _truncated(data, affine, path):
    _save(data, affine, path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _random_bytes(data, affine, path):
    path.write_bytes(gzip.compress(os.urandom(4096)))
    return path


def _png_renamed(data, affine, path):
    import matplotlib.image

    png = path.with_suffix(".png")
    matplotlib.image.imsave(png, data[:, :, data.shape[2] // 2])
    png.rename(path)
    return path


def _two_d(data, affine, path):
    return _save(data[:, :, data.shape[2] // 2 : data.shape[2] // 2 + 1], affine, path)


def _four_d(data, affine, path):
    return _save(np.stack([data, data * 1.1], axis=-1), affine, path)


def _with_value(value):
    def build(data, affine, path):
        bad = data.copy()
        bad[tuple(s // 2 for s in bad.shape)] = value
        return _save(bad, affine, path)

    return build


def _filled(value):
    return lambda data, affine, path: _save(np.full(data.shape, value, np.float32), affine, path)


def _outliers(data, affine, path):
    bad = data.copy()
    brain = np.argwhere(bad > 0)
    for index in brain[:: max(1, len(brain) // 20)][:20]:
        bad[tuple(index)] = 1e6  # a few hot voxels (BraTS has 32767s): robust scaling must ignore them
    return _save(bad, affine, path)


def _scaled_affine(scale):
    def build(data, affine, path):
        new = affine.copy()
        new[:3, :3] = affine[:3, :3] @ np.diag(scale)
        return _save(data, new, path)

    return build


def _zero_voxel_size(data, affine, path):
    """An sform with a zero column (nibabel cannot build a qform from it, so only the sform is set)."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(None, code=0)
    singular = affine.copy()
    singular[:3, 1] = 0.0
    image.set_sform(singular, code=1)
    nib.save(image, str(path))
    return path


def _sheared(data, affine, path):
    shear = np.eye(4)
    shear[0, 1] = 0.4
    return _save(data, affine @ shear, path)


def _oblique(data, affine, path):
    angle = np.deg2rad(20)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return _save(data, rotation @ affine, path)


def _thick_slices(data, affine, path):
    """The paper's in-house geometry: 18 axial slices, 7 mm thick, about the same centre as the valid scan."""
    from scipy import ndimage

    spacing_z = float(np.linalg.norm(affine[:3, 2]))
    # Thick slices integrate over 7 mm: blur along z, then sample every 7 mm around the centre.
    blurred = ndimage.gaussian_filter1d(data, sigma=7.0 / spacing_z / 2.355, axis=2)
    centre = (data.shape[2] - 1) / 2
    positions = centre + (np.arange(18) - 8.5) * 7.0 / spacing_z
    grid = np.meshgrid(np.arange(data.shape[0]), np.arange(data.shape[1]), positions, indexing="ij")
    thick = ndimage.map_coordinates(blurred, grid, order=1, mode="constant")
    new = affine.copy()
    new[:3, 2] = affine[:3, 2] * 7.0 / spacing_z
    new[:3, 3] = affine[:3, 3] + affine[:3, 2] * positions[0]
    return _save(thick.astype(np.float32), new, path)


def _too_large(data, affine, path):
    """A header claiming 3000³ voxels (~100 GiB as float32) over a few bytes: refused before reading."""
    header = nib.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    header.set_data_dtype(np.float32)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 1024)
    return path


def _no_orientation(data, affine, path):
    """qform_code = sform_code = 0: no orientation at all (nibabel falls back to a guess that can mirror the scan)."""
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=0)
    image.set_qform(affine, code=0)
    nib.save(image, str(path))
    return path


def _label_map_as_scan(data, affine, path):
    """A BraTS-style tumour label map (0, 1, 2, 4) given as the scan: small regions, so skull stripping runs."""
    labels = np.zeros(data.shape, np.uint8)
    centre = np.asarray(data.shape) // 2
    labels[tuple(slice(c - 6, c + 6) for c in centre)] = 2
    labels[tuple(slice(c - 3, c + 3) for c in centre)] = 4
    labels[tuple(slice(c - 1, c + 1) for c in centre)] = 1
    return _save(labels, affine, path)


def _head_shaped_noise(data, affine, path):
    """Random noise filling the brain's shape: intensities vary, but neighbouring voxels are unrelated."""
    noise = np.random.default_rng(0).uniform(100.0, 1000.0, data.shape).astype(np.float32)
    return _save(np.where(data > 0, noise, 0.0).astype(np.float32), affine, path)


def _label_shape(data, affine, path):
    return _save(np.zeros(tuple(s - 4 for s in data.shape), np.uint8), affine, path)


def _label_affine(data, affine, path):
    moved = affine.copy()
    moved[:3, 3] += 10.0
    return _save((data > np.percentile(data, 99)).astype(np.uint8), moved, path)


def _label_fractional(data, affine, path):
    return _save((data > np.percentile(data, 99)).astype(np.float32) * 0.5, affine, path)


KINDS = [
    BadKind("truncated_gzip", _truncated, "truncated or corrupt"),
    BadKind("random_bytes", _random_bytes, "not a readable NIfTI"),
    BadKind("png_renamed", _png_renamed, "not a readable NIfTI"),
    BadKind("image_2d", _two_d, "2D image"),
    BadKind("series_4d", _four_d, "4D series.*pick one volume"),
    BadKind("nan_voxels", _with_value(np.nan), "NaN or Inf"),
    BadKind("inf_voxels", _with_value(np.inf), "NaN or Inf"),
    BadKind("all_zero", _filled(0.0), "constant"),
    BadKind("constant", _filled(7.0), "constant"),
    BadKind("huge_outliers", _outliers, "ok"),
    BadKind("zero_voxel_size", _zero_voxel_size, "voxel size|singular"),
    BadKind("negative_voxel_size", _scaled_affine([-1.0, 1.0, 1.0]), "ok"),
    BadKind("sheared_affine", _sheared, "sheared"),
    BadKind("oblique_affine", _oblique, "ok"),
    BadKind("thick_slices_7mm_18", _thick_slices, "ok"),
    BadKind("too_large_for_memory", _too_large, r"GiB"),
    BadKind("no_orientation_codes", _no_orientation, "has no orientation.*--assume-orientation"),
    BadKind("label_map_as_scan", _label_map_as_scan, "a mask or label map, not a scan"),
    BadKind("head_shaped_noise", _head_shaped_noise, "this is not a brain"),
    BadKind("label_wrong_shape", _label_shape, "does not match its image", target="label"),
    BadKind("label_wrong_affine", _label_affine, "does not match its image", target="label"),
    BadKind("label_non_integer", _label_fractional, "non-integer", target="label"),
]
