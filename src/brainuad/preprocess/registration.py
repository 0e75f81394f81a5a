"""Registration to MNI space with ANTsPy, and resampling between a scan's native space and an MNI grid.

ANTs only *estimates* the transform. It is stored as a plain 4×4 matrix (world RAS+ mm, MNI → native) in JSON, so
mapping results back to a scan needs no ANTs file and no pickle, and all resampling goes through one function.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from brainuad.errors import InputError
from brainuad.io.volumes import Volume
from brainuad.preprocess.templates import Grid, mni_brain_mask, mni_template_at

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS ↔ LPS (ITK/ANTs world convention); its own inverse

#: Registration runs on one ITK thread: ANTs' Mattes metric sums its joint histogram per thread, so with 2 threads
#: repeated runs on one scan differed by up to 0.12 (matrix entries; ~1 mm at the brain's edge), with 1 thread they are
#: bit-identical. ITK reads this variable once, when it first starts a thread pool, so it is set here, before ANTs is
#: imported (measured cost on IXI002's T2: none — 1 thread took 7–8 s, 2 threads 8–13 s on the shared 2-core machine).
REGISTRATION_THREADS = 1
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(REGISTRATION_THREADS)

#: Multi-resolution schedule. Linear alignment of a brain needs no full-resolution level: the coarse levels decide
#: it, and this keeps registration at a few seconds on 2 cores (ANTs' default schedule took ~3× longer for the same
#: mask overlap on the test scans).
_SCHEDULE = {
    "aff_iterations": (100, 70, 30, 0),
    "aff_shrink_factors": (8, 4, 2, 1),
    "aff_smoothing_sigmas": (3, 2, 1, 0),
}


@dataclass(frozen=True)
class Transform:
    """How a native scan and the MNI template relate.

    Attributes:
        mni_to_native: 4×4 matrix taking a point in MNI world coordinates (RAS+, mm) to the scan's world coordinates.
        native_affine: RAS+ canonical affine of the native scan (voxel → world).
        native_shape: Shape of the native scan in RAS+ canonical order.
        native_axcodes: Voxel orientation of the native file, to write outputs in the same order.
        kind: ``rigid`` or ``affine``.
    """

    mni_to_native: np.ndarray
    native_affine: np.ndarray
    native_shape: tuple[int, int, int]
    native_axcodes: tuple[str, str, str]
    kind: str = "rigid"

    def to_dict(self) -> dict[str, Any]:
        return {
            "convention": "world RAS+ mm; mni_to_native maps an MNI point to a native-scan point",
            "kind": self.kind,
            "mni_to_native": np.asarray(self.mni_to_native).tolist(),
            "native_affine": np.asarray(self.native_affine).tolist(),
            "native_shape": list(self.native_shape),
            "native_axcodes": list(self.native_axcodes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transform:
        matrix = np.asarray(data["mni_to_native"], dtype=np.float64)
        native_affine = np.asarray(data["native_affine"], dtype=np.float64)
        if matrix.shape != (4, 4) or native_affine.shape != (4, 4):
            raise ValueError("transform matrices must be 4×4")
        if not (np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix[:3, :3])) > 1e-6):
            raise ValueError("mni_to_native is not a finite invertible matrix")
        shape = tuple(int(s) for s in data["native_shape"])
        axcodes = tuple(str(c) for c in data["native_axcodes"])
        if len(shape) != 3 or len(axcodes) != 3:
            raise ValueError("native_shape and native_axcodes need 3 entries")
        return cls(matrix, native_affine, shape, axcodes, str(data.get("kind", "rigid")))  # type: ignore[arg-type]

    def native_grid_volume(self, array: np.ndarray) -> Volume:
        """Wrap a native-grid array as a Volume that saves in the native file's voxel order."""
        return Volume(array, self.native_affine.copy(), self.native_axcodes)


def to_ants(volume: Volume):
    """An ``ants.ANTsImage`` of the volume (ANTs works in LPS world coordinates)."""
    import ants

    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    direction_ras = volume.affine[:3, :3] / spacing
    if not np.allclose(direction_ras.T @ direction_ras, np.eye(3), atol=1e-3):
        raise InputError(volume.path, "sheared affine (axes not orthogonal); reslice the scan to an orthogonal grid")
    direction = _LPS[:3, :3] @ direction_ras
    origin = _LPS[:3, :3] @ volume.affine[:3, 3]
    return ants.from_numpy(
        np.ascontiguousarray(volume.array, dtype=np.float32),
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def _ants_transform_to_ras_matrix(transform_file: str) -> np.ndarray:
    """4×4 RAS+ matrix of an ANTs linear transform file (fixed → moving point mapping)."""
    import ants

    tx = ants.read_transform(transform_file)
    origin = np.asarray(tx.apply_to_point((0.0, 0.0, 0.0)))
    lps = np.eye(4)
    lps[:3, 3] = origin
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        lps[:3, axis] = np.asarray(tx.apply_to_point(tuple(unit))) - origin
    return _LPS @ lps @ _LPS


def ants_seed(seed: int) -> int:
    """The ``--random-seed`` given to ANTs for brainuad's ``registration_seed`` (never 0: 0 means the clock)."""
    return int(seed) + 1 if seed >= 0 else int(seed)


def affine_between(fixed: Volume, moving: Volume, seed: int = 0) -> np.ndarray:
    """ANTs affine (mutual information) from ``fixed`` to ``moving``: a 4×4 RAS+ matrix taking fixed-world points
    to moving-world points."""
    import ants

    # antspyx reads the seed from here, not from registration()'s random_seed. ANTs takes a seed of 0 to mean "seed
    # from the clock" (repeated runs then differed by up to 0.2), so seed s is passed as s + 1.
    ants.config._random_seed = ants_seed(seed)
    result = ants.registration(
        fixed=to_ants(fixed),
        moving=to_ants(moving),
        type_of_transform="Affine",
        aff_metric="mattes",
        verbose=False,
        **_SCHEDULE,
    )
    matrix = _ants_transform_to_ras_matrix(result["fwdtransforms"][0])
    for path in set(result["fwdtransforms"]) | set(result["invtransforms"]):
        if os.path.exists(path):
            os.unlink(path)
    return matrix


def rigid_part(matrix: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The rotation + translation closest to an affine map, agreeing with it at ``centre``.

    The rotation is the orthogonal factor of the polar decomposition of the linear part.
    """
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:  # a reflection cannot be a rigid motion
        u[:, -1] *= -1
        rotation = u @ vt
    rigid = np.eye(4)
    rigid[:3, :3] = rotation
    rigid[:3, 3] = matrix[:3, :3] @ centre + matrix[:3, 3] - rotation @ centre
    return rigid


@functools.lru_cache(maxsize=1)
def template_brain_centre() -> np.ndarray:
    """Centroid of the template's brain mask (MNI mm)."""
    mask = mni_brain_mask()
    voxels = np.argwhere(mask.array).mean(axis=0)
    return mask.affine[:3, :3] @ voxels + mask.affine[:3, 3]


def estimate_transform(
    brain: Volume,
    kind: str = "rigid",
    contrast: str = "t1",
    seed: int = 0,
    head: bool = False,
    template_spacing: int = 1,
) -> Transform:
    """Register a (skull-stripped) scan to the MNI template with mutual information.

    ANTs always fits an affine; ``rigid`` then keeps its rotation and translation (about the template brain's
    centre). Why: a rigid MI fit of a skull-stripped brain to the template is poorly conditioned — an individual brain
    is smaller than the template and can slide inside it. On the BraTS scans here, turning the header by 10° and
    shifting it by 15 mm moved ANTs' rigid result by up to 26 mm (and repeated runs differed by up to 9 mm), while the
    affine fit moved by at most 1 mm. The result is still a 6-dof transform that keeps the brain's size, as in the
    paper.

    Reproducibility: bit-identical on one machine. The seed reaches ANTs as ``seed + 1`` (ANTs reads 0 as "use the
    clock") and ANTs runs on one thread (see :data:`REGISTRATION_THREADS`). The transform used is stored in each
    case's ``transform.json``, so everything downstream of a preprocessed case is exactly repeatable too.

    Args:
        brain: The scan, skull-stripped unless ``head``.
        kind: ``rigid`` (6 dof) or ``affine`` (12 dof).
        contrast: Template contrast, ``t1`` or ``t2`` (see :func:`brainuad.preprocess.templates.mni_template`).
        seed: ANTs' random seed for metric sampling.
        head: The scan still has its skull (used by template-based skull stripping; always affine).
        template_spacing: Register to the template block-averaged to this many mm (2 for 2 mm crops: ~10× faster).

    Returns:
        The transform from MNI to the scan's native space.
    """
    if kind not in ("rigid", "affine"):
        raise ValueError(f"unknown registration {kind!r}; choose 'rigid' or 'affine'")
    matrix = affine_between(mni_template_at(contrast, template_spacing), brain, seed=seed)
    if head:
        kind = "affine"
    if kind == "rigid":
        matrix = rigid_part(matrix, template_brain_centre())
    return Transform(matrix, brain.affine.copy(), brain.shape, brain.source_axcodes, kind)


def _resample(array: np.ndarray, voxel_map: np.ndarray, output_shape: tuple[int, ...], order: int) -> np.ndarray:
    """Sample ``array`` at ``voxel_map`` @ output voxel (a 4×4 output-voxel → input-voxel matrix)."""
    source = array.astype(np.float32, copy=False) if order > 0 else array
    return ndimage.affine_transform(
        source,
        voxel_map[:3, :3],
        offset=voxel_map[:3, 3],
        output_shape=tuple(output_shape),
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )


def native_to_mni(array: np.ndarray, transform: Transform, grid: Grid, order: int = 1) -> np.ndarray:
    """Resample a native-space array (RAS+ order) onto an MNI grid.

    Args:
        array: Native array with shape ``transform.native_shape``.
        transform: From :func:`estimate_transform`.
        grid: Target MNI grid (a crop preset, say).
        order: 1 = trilinear for images and maps, 0 = nearest neighbour for labels.
    """
    _check_shape(array, transform.native_shape, "native")
    voxel_map = np.linalg.inv(transform.native_affine) @ transform.mni_to_native @ grid.affine_array
    return _resample(array, voxel_map, grid.shape, order)


def mni_to_native_resample(
    array: np.ndarray, mni_affine: np.ndarray, transform: Transform, order: int = 1
) -> np.ndarray:
    """Resample an array on any MNI grid (given by its affine) into the scan's native grid."""
    voxel_map = np.linalg.inv(mni_affine) @ np.linalg.inv(transform.mni_to_native) @ transform.native_affine
    return _resample(array, voxel_map, transform.native_shape, order)


def to_native(array_mni: np.ndarray, transform: Transform, grid: Grid, order: int = 1) -> Volume:
    """Map an array on an MNI grid back into the scan's native space.

    Args:
        array_mni: Array with shape ``grid.shape`` (an anomaly map, a segmentation, …).
        transform: The scan's transform.
        grid: The MNI grid ``array_mni`` lives on.
        order: 1 = linear (maps), 0 = nearest neighbour (labels: the dtype is kept).

    Returns:
        A Volume on the native grid that :func:`brainuad.io.volumes.save_volume` writes in the input's voxel order.
    """
    _check_shape(array_mni, grid.shape, "MNI")
    native = mni_to_native_resample(array_mni, grid.affine_array, transform, order)
    return transform.native_grid_volume(native)


def _check_shape(array: np.ndarray, expected: tuple[int, ...], space: str) -> None:
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{space}-space array has shape {array.shape}, expected {tuple(expected)}")


def fraction_outside_grid(mask_native: np.ndarray, transform: Transform, grid: Grid) -> float:
    """Fraction of a native mask's voxels whose centres fall outside an MNI grid (lost by the crop)."""
    _check_shape(mask_native, transform.native_shape, "native")
    voxels = np.argwhere(mask_native)
    if voxels.size == 0:
        return 0.0
    native_to_grid = np.linalg.inv(grid.affine_array) @ np.linalg.inv(transform.mni_to_native) @ transform.native_affine
    grid_voxels = voxels @ native_to_grid[:3, :3].T + native_to_grid[:3, 3]
    upper = np.asarray(grid.shape) - 0.5
    outside = np.any((grid_voxels < -0.5) | (grid_voxels > upper), axis=1)
    return float(outside.mean())


def registration_overlap(brain_mask_native: np.ndarray, transform: Transform) -> dict[str, float]:
    """How well the scan's brain mask, mapped to MNI, matches the template's brain mask.

    Returns:
        ``dice`` (bounded above by the volume ratio: the template mask is generous, ~1.9 L) and ``inside`` — the
        fraction of the mapped brain lying within the template mask dilated by 3 mm, which does not depend on brain
        size and drops sharply when the registration is off.
    """
    template_mask = mni_brain_mask()
    template_grid = Grid("template", template_mask.shape, tuple(map(tuple, template_mask.affine)))
    mapped = native_to_mni(brain_mask_native.astype(np.float32), transform, template_grid, order=1) > 0.5
    reference = template_mask.array
    total = mapped.sum()
    if total == 0:
        return {"dice": 0.0, "inside": 0.0}
    dilated = ndimage.binary_dilation(reference, iterations=3)
    return {
        "dice": float(2.0 * np.logical_and(mapped, reference).sum() / (total + reference.sum())),
        "inside": float(np.logical_and(mapped, dilated).sum() / total),
    }
