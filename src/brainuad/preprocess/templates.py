"""The MNI template (from nilearn's bundled ICBM152 2009a symmetric files) and the crop grids of the presets.

Everything here comes from installed packages, so preprocessing works offline and never reads ``../shared``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from brainuad.io.volumes import Volume


@dataclass(frozen=True)
class Grid:
    """A voxel grid in MNI space: ``shape`` voxels placed in the world by ``affine`` (RAS+, mm)."""

    name: str
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]

    @property
    def affine_array(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=np.float64)

    @property
    def voxel_ml(self) -> float:
        """The volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine_array[:3, :3])) / 1000)

    @property
    def spacing_mm(self) -> float:
        """The voxel size in mm (the cube root of the voxel volume: crop grids are isotropic)."""
        return (self.voxel_ml * 1000) ** (1 / 3)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "affine": [list(r) for r in self.affine]}

    @classmethod
    def from_dict(cls, data: dict) -> Grid:
        return cls(
            str(data["name"]), tuple(int(s) for s in data["shape"]), tuple(tuple(map(float, r)) for r in data["affine"])
        )


def _grid(name: str, shape: tuple[int, int, int], origin_mm: tuple[float, float, float], spacing: float = 1.0) -> Grid:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin_mm
    return Grid(name, shape, tuple(tuple(float(v) for v in row) for row in affine))


#: Crop grids at 1 mm, RAS+. ``paper``: the 160×192×96 crop of Luo et al.; its 96 axial slices span
#: z = -26…+69 mm (the cerebrum around the ventricles; the cerebellum and the vertex fall outside).
#: ``whole-brain``: 160×208×160 covers the complete MNI brain mask (x ±72, y -111…+78, z -72…+82 mm).
#: ``paper-2mm``: the paper's field of view at 2 mm (80×96×48), for quick CPU runs and tests.
#: Every side is divisible by 16 so the autoencoder's four down-sampling steps divide evenly.
CROP_GRIDS: dict[str, Grid] = {
    "paper": _grid("paper", (160, 192, 96), (-80.0, -114.0, -26.0)),
    "whole-brain": _grid("whole-brain", (160, 208, 160), (-80.0, -122.0, -76.0)),
    "paper-2mm": _grid("paper-2mm", (80, 96, 48), (-79.5, -113.5, -25.5), spacing=2.0),
}


def crop_grid(preset: str) -> Grid:
    """The MNI crop grid of a preset (``paper`` or ``whole-brain``)."""
    try:
        return CROP_GRIDS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(CROP_GRIDS)}") from None


#: The 1 mm ICBM152 2009 files nilearn ships, read directly: importing ``nilearn.datasets`` imports ``requests``, and
#: urllib3 opens an AF_INET6 socket at import to probe for IPv6 — no socket may be opened at run time.
_NILEARN_FILES = {
    "load_mni152_template": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "load_mni152_gm_template": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "load_mni152_wm_template": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def _nilearn_volume(loader_name: str) -> Volume:
    """What ``nilearn.datasets.<loader_name>(resolution=1)`` returns (rescaled to 0…1; the brain mask is the T1
    template above 0.2), read from nilearn's package data without importing ``nilearn.datasets``."""
    import importlib.util
    from pathlib import Path

    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nilearn is not installed; it ships the MNI templates brainuad registers to")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    name = "load_mni152_template" if loader_name == "load_mni152_brain_mask" else loader_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = nib.load(str(data / _NILEARN_FILES[name]))
        canonical = nib.as_closest_canonical(img)
        array = np.asarray(canonical.get_fdata(), dtype=np.float32)
    array /= array.max()
    if loader_name == "load_mni152_brain_mask":
        array = (array > 0.2).astype(np.float32)
    return Volume(array, canonical.affine)


@functools.lru_cache(maxsize=4)
def mni_template(contrast: str = "t1") -> Volume:
    """The 1 mm MNI ICBM152 2009a symmetric brain template (skull removed), intensities in [0, 1].

    Args:
        contrast: ``t1`` (the template itself) or ``t2`` (a T2-like contrast synthesised from the template's
            tissue maps: CSF bright, grey matter brighter than white matter).
    """
    if contrast == "t1":
        template = _nilearn_volume("load_mni152_template")
        mask = mni_brain_mask().array
        return template.with_array(np.where(mask, template.array, 0.0).astype(np.float32))
    if contrast == "t2":
        return tissue_contrast_template(csf=1.0, grey=0.55, white=0.3)
    raise ValueError(f"unknown template contrast {contrast!r}; choose 't1' or 't2'")


@functools.lru_cache(maxsize=4)
def mni_template_at(contrast: str = "t1", spacing: int = 1) -> Volume:
    """The template averaged over blocks of ``spacing``³ voxels (e.g. 2 mm for the ``paper-2mm`` preset).

    Registering to a template at the crop's resolution is ~10× faster and loses nothing the crop would keep.
    """
    template = mni_template(contrast)
    if spacing == 1:
        return template
    shape = np.asarray(template.shape) // spacing * spacing
    trimmed = template.array[: shape[0], : shape[1], : shape[2]]
    blocks = trimmed.reshape(shape[0] // spacing, spacing, shape[1] // spacing, spacing, shape[2] // spacing, spacing)
    # New voxel i covers old voxels spacing*i … spacing*i + spacing − 1: its centre is half a block further on.
    scale = np.diag([spacing, spacing, spacing, 1.0])
    scale[:3, 3] = (spacing - 1) / 2
    return Volume(blocks.mean(axis=(1, 3, 5)).astype(np.float32), template.affine @ scale)


@functools.lru_cache(maxsize=1)
def mni_brain_mask() -> Volume:
    """The template's 1 mm brain mask (bool)."""
    mask = _nilearn_volume("load_mni152_brain_mask")
    return mask.with_array(mask.array > 0.5)


@functools.lru_cache(maxsize=1)
def mni_tissue_maps() -> dict[str, Volume]:
    """Grey matter, white matter and CSF probability maps on the template grid (CSF = brain − GM − WM)."""
    grey = _nilearn_volume("load_mni152_gm_template")
    white = _nilearn_volume("load_mni152_wm_template")
    brain = mni_brain_mask().array.astype(np.float32)
    csf = np.clip(brain - grey.array - white.array, 0.0, 1.0) * brain
    return {"grey": grey, "white": white, "csf": grey.with_array(csf.astype(np.float32))}


def tissue_contrast_template(csf: float, grey: float, white: float) -> Volume:
    """A template with chosen tissue intensities, as a weighted sum of the tissue probability maps."""
    maps = mni_tissue_maps()
    array = csf * maps["csf"].array + grey * maps["grey"].array + white * maps["white"].array
    return maps["grey"].with_array(array.astype(np.float32))


def tissue_masks_on(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of ``grid`` that are mostly CSF (probability > 0.5) and almost surely white matter (> 0.9) in MNI space:
    where a scan's contrast is read (T2: CSF brighter than white matter; T1 and FLAIR: darker)."""
    key = (grid.shape, tuple(map(tuple, np.asarray(grid.affine_array).round(6))))
    if key not in _TISSUE_MASKS:
        from scipy import ndimage

        maps = mni_tissue_maps()
        voxel_map = np.linalg.inv(maps["csf"].affine) @ grid.affine_array
        on_grid = [
            ndimage.affine_transform(
                maps[t].array, voxel_map[:3, :3], offset=voxel_map[:3, 3], output_shape=grid.shape, order=1
            )
            > threshold
            for t, threshold in (("csf", 0.5), ("white", 0.9))
        ]
        _TISSUE_MASKS[key] = (on_grid[0], on_grid[1])
    return _TISSUE_MASKS[key]


_TISSUE_MASKS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
