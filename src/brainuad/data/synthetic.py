"""Synthetic T2-weighted brains from the MNI tissue maps that nilearn ships: a healthy cohort with anatomical and
intensity variation, and patients with planted lesions of the paper's three kinds (and their exact masks).

**Synthetic data, for demonstration and tests only**: it shows the chain working, not how well a method works on
real patients. Contrast follows the tissue classes of a T2-weighted scan: CSF brightest, grey matter brighter than
white matter; lesions are T2-hyperintense:

- ``glioma``: a mass in the white matter — heterogeneous core with a bright necrotic centre, and surrounding oedema
  with an irregular border;
- ``ms``: 4–10 small ovoid periventricular plaques;
- ``infarct``: a cortical, CSF-bright wedge-like region lateral in a hemisphere.

Each subject is a skull-stripped scan (zero background) on a ``spacing`` mm grid, posed by a random rigid motion
plus a smooth elastic deformation of the template, with a smooth bias field, Gaussian noise and arbitrary scanner
units, so preprocessing (registration, scaling) has real work to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad.io.volumes import Volume, save_volume
from brainuad.preprocess.templates import mni_tissue_maps

LESION_KINDS = ("glioma", "ms", "infarct")


@dataclass
class SyntheticSubject:
    """One synthetic scan, its brain mask and (for patients) the lesion mask, on one grid."""

    image: Volume
    brain: np.ndarray
    lesion: np.ndarray | None
    kind: str


def _rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field: Gaussian noise on a coarse grid, cubic-upsampled to ``shape``."""
    small = rng.normal(0.0, amplitude, (coarse,) * 3)
    return ndimage.zoom(small, [s / coarse for s in shape], order=3, mode="nearest")[: shape[0], : shape[1], : shape[2]]


def _deformed_tissues(rng: np.random.Generator, spacing: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tissue probability maps sampled on a ``spacing`` mm grid through a random rigid + elastic deformation."""
    maps = mni_tissue_maps()
    template_affine = maps["grey"].affine
    template_shape = np.asarray(maps["grey"].shape)
    shape = tuple(int(np.ceil(s / spacing)) for s in template_shape)
    affine = template_affine.copy()
    affine[:3, :3] = template_affine[:3, :3] * spacing
    centre = template_affine[:3, :3] @ (template_shape / 2) + template_affine[:3, 3]
    voxels = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3] @ voxels + affine[:3, 3:4]
    scale = np.diag(rng.uniform(0.94, 1.06, 3))
    linear = _rotation(rng, 6.0) @ scale
    moved = linear @ (world - centre[:, None]) + centre[:, None] + rng.uniform(-6, 6, (3, 1))
    for axis in range(3):  # elastic part: up to a few mm, smooth over ~3 cm
        moved[axis] += _smooth_field(rng, shape, 6, 2.0).reshape(-1)
    source = np.linalg.inv(template_affine) @ np.vstack([moved, np.ones((1, moved.shape[1]))])
    tissues = {
        name: ndimage.map_coordinates(volume.array, source[:3], order=1, mode="constant").reshape(shape)
        for name, volume in maps.items()
    }
    return tissues, affine


def _sphere(shape: tuple[int, ...], centre: np.ndarray, radii_vox: np.ndarray) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii_vox)) <= 1.0


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray:
    where = np.argwhere(candidates)
    if where.size == 0:
        raise RuntimeError("no place to plant the lesion")
    return where[rng.integers(len(where))].astype(np.float64)


def _plant(
    rng: np.random.Generator, kind: str, tissues: dict[str, np.ndarray], brain: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """A lesion mask and its T2 intensity (relative to CSF = 1) on the subject's grid."""
    shape = brain.shape
    inside = ndimage.distance_transform_edt(brain) * spacing  # mm to the brain's edge
    white = tissues["white"] > 0.6
    intensity = np.zeros(shape, np.float32)
    if kind == "glioma":
        centre = _pick(rng, white & (inside > 25))
        radii = rng.uniform(7, 13, 3) / spacing
        core = _sphere(shape, centre, radii)
        necrosis = _sphere(shape, centre, radii * 0.45)
        irregular = _smooth_field(rng, shape, 12, 1.0) > -0.3
        oedema = _sphere(shape, centre, radii + rng.uniform(5, 10) / spacing) & irregular & brain & ~core
        lesion = core | oedema
        intensity[oedema] = rng.uniform(0.72, 0.85)
        intensity[core] = rng.uniform(0.55, 0.75) + 0.15 * _smooth_field(rng, shape, 16, 1.0)[core]
        intensity[necrosis] = rng.uniform(0.9, 1.0)
    elif kind == "ms":
        ventricles = ndimage.binary_opening(tissues["csf"] > 0.7, iterations=1) & (inside > 20)
        near = ndimage.distance_transform_edt(~ventricles) * spacing
        candidates = white & (near > 2) & (near < 8)
        lesion = np.zeros(shape, bool)
        for _ in range(rng.integers(4, 11)):
            lesion |= _sphere(shape, _pick(rng, candidates), rng.uniform(2.0, 4.5, 3) / spacing)
        lesion &= brain
        intensity[lesion] = rng.uniform(0.78, 0.92)
    elif kind == "infarct":
        world_x = (np.arange(shape[0]) - shape[0] / 2) * spacing
        lateral = np.abs(world_x)[:, None, None] > 30
        centre = _pick(rng, (tissues["grey"] > 0.5) & (inside < 4) & (inside > 0) & lateral)
        lesion = _sphere(shape, centre, rng.uniform(10, 17, 3) / spacing) & brain
        intensity[lesion] = rng.uniform(0.85, 1.0)
    else:
        raise ValueError(f"unknown lesion kind {kind!r}; choose from {LESION_KINDS}")
    return lesion, intensity


def synthetic_subject(
    seed: int, lesion_kind: str | None = None, spacing: float = 2.0, bias: bool = True
) -> SyntheticSubject:
    """One synthetic T2-weighted scan (healthy when ``lesion_kind`` is ``None``), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    tissues, affine = _deformed_tissues(rng, spacing)
    brain = (tissues["grey"] + tissues["white"] + tissues["csf"]) > 0.5
    brain = ndimage.binary_fill_holes(ndimage.binary_opening(brain, iterations=1))
    csf, grey, white = 1.0, rng.uniform(0.5, 0.62), rng.uniform(0.28, 0.38)
    image = csf * tissues["csf"] + grey * tissues["grey"] + white * tissues["white"]
    image = image / np.maximum(tissues["csf"] + tissues["grey"] + tissues["white"], 1e-3)
    lesion = None
    if lesion_kind is not None:
        lesion, intensity = _plant(rng, lesion_kind, tissues, brain, spacing)
        weight = ndimage.gaussian_filter(lesion.astype(np.float32), 0.6)  # partial volume at the border
        image = np.where(lesion | (weight > 0.05), (1 - weight) * image + weight * np.maximum(intensity, 0), image)
    if bias:
        image = image * np.exp(_smooth_field(rng, brain.shape, 4, 0.08))
    image = image + rng.normal(0.0, 0.015, brain.shape)
    image = np.where(brain, np.clip(image, 0.01, None), 0.0) * rng.uniform(400, 1500)
    return SyntheticSubject(Volume(image.astype(np.float32), affine), brain, lesion, lesion_kind or "healthy")


@dataclass
class SyntheticCohort:
    """Where :func:`write_cohort` put things."""

    healthy: Path
    tuning: Path
    test: Path


def write_cohort(
    out_dir: str | Path,
    n_healthy: int,
    n_tuning: int,
    n_test: int,
    spacing: float = 2.0,
    seed: int = 0,
    subject: Callable[[int, str | None, float], SyntheticSubject] = synthetic_subject,
) -> SyntheticCohort:
    """Write a synthetic cohort: healthy scans, and BraTS-style lesion cases for tuning and for testing.

    Layout: ``healthy/synth-healthy-000.nii.gz``…; ``tuning/<case>/<case>_t2.nii.gz`` + ``<case>_seg.nii.gz``;
    ``test/<case>/…`` likewise. Lesion kinds cycle through glioma, MS, infarct. Existing files are kept (re-runs
    with the same arguments reuse them). ``subject(seed, lesion_kind, spacing)`` makes each scan (default: from
    the MNI tissue maps; :func:`brainuad.data.mrsim.simulated_subject` simulates them from BrainWeb anatomies).
    """
    out_dir = Path(out_dir)
    cohort = SyntheticCohort(out_dir / "healthy", out_dir / "tuning", out_dir / "test")
    for i in range(n_healthy):
        path = cohort.healthy / f"synth-healthy-{i:03d}.nii.gz"
        if not path.exists():
            save_volume(subject(seed * 10_000 + i, None, spacing).image, path)
    for split, count, offset in (("tuning", n_tuning, 1000), ("test", n_test, 2000)):
        for i in range(count):
            kind = LESION_KINDS[i % len(LESION_KINDS)]
            name = f"synth-{split}-{kind}-{i:02d}"
            folder = out_dir / split / name
            if (folder / f"{name}_seg.nii.gz").exists():
                continue
            case = subject(seed * 10_000 + offset + i, kind, spacing)
            save_volume(case.image, folder / f"{name}_t2.nii.gz")
            save_volume(case.image.with_array(case.lesion.astype(np.uint8)), folder / f"{name}_seg.nii.gz")
    return cohort
