"""NIfTI input/output that keeps the affine with the array, validates what it reads and writes atomically.

Atomic files and folders, folder ownership and JSON live in :mod:`brainuad.io.files` (re-exported here, where older code
imports them from).

A :class:`Volume` is always held in RAS+ canonical voxel order (like ``nib.as_closest_canonical``) and remembers the
orientation of the file it came from, so :func:`save_volume` writes outputs back in the same voxel order as the input
and they overlay on the original scan in any viewer.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from brainuad.errors import InputError, OutputError
from brainuad.io.files import (
    OWNER_MARKER,
    atomic_folder,
    atomic_path,
    check_replaceable,
    current_umask,
    ensure_writable_folder,
    read_json,
    remove_staging_folders,
    safe_name,
    walk,
    write_json,
)

__all__ = [
    "OWNER_MARKER",
    "Volume",
    "atomic_folder",
    "atomic_path",
    "check_replaceable",
    "current_umask",
    "ensure_writable_folder",
    "find_nifti_files",
    "is_nifti_path",
    "load_volume",
    "read_grid",
    "read_json",
    "remove_staging_folders",
    "safe_name",
    "save_volume",
    "strip_nifti_suffix",
    "to_canonical",
    "write_json",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Refuse volumes whose float32 copy would need more than this many bytes (a 512³ volume is 0.5 GiB).
DEFAULT_MAX_BYTES = 4 * 1024**3
#: Voxel sizes outside this range (mm) are almost certainly a broken header.
VOXEL_SIZE_RANGE_MM = (0.05, 20.0)

VolumeKind = Literal["image", "label", "mask"]


@dataclass
class Volume:
    """A 3D array with its voxel-to-world affine (RAS+ mm), in RAS+ canonical voxel order.

    Attributes:
        array: 3D array, axes ordered so that increasing indices go Right, Anterior, Superior.
        affine: 4×4 voxel → world (RAS+, mm) matrix for ``array``.
        source_axcodes: Voxel orientation of the file on disk (e.g. ``("L", "P", "S")``); used to save back.
        header: Header of the source file (geometry template for outputs), or ``None``.
        path: File the volume was read from, or ``None``.
    """

    array: np.ndarray
    affine: np.ndarray
    source_axcodes: tuple[str, str, str] = ("R", "A", "S")
    header: nib.Nifti1Header | None = field(default=None, repr=False)
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(self.path, f"expected a 3D array, got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(self.path, f"affine must be 4×4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume on the same grid (same affine, orientation and header) holding ``array``."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match the grid {self.shape}")
        return Volume(array, self.affine.copy(), self.source_axcodes, self.header, self.path)


def is_nifti_path(path: str | Path) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz``."""
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(path: str | Path) -> str:
    """File name without ``.nii``/``.nii.gz`` (``sub-01_T2w.nii.gz`` → ``sub-01_T2w``)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a NIfTI file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied (file is not readable)")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if not is_nifti_path(path):
        raise InputError(path, "not a NIfTI file name (expected .nii or .nii.gz)")


def _check_affine(path: Path | None, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)):
        raise InputError(path, "the affine (sform/qform) contains NaN or Inf")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    low, high = VOXEL_SIZE_RANGE_MM
    if np.any(zooms < low) or np.any(zooms > high):
        raise InputError(
            path, f"implausible voxel size {tuple(round(float(z), 4) for z in zooms)} mm (allowed {low}–{high} mm)"
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, "the affine is singular (zero or degenerate voxel size)")


def _check_qform_sform(path: Path, img: nib.Nifti1Image | nib.Nifti2Image, shape: tuple[int, ...]) -> None:
    """Both orientations set but placing the volume differently: nibabel would pick the sform silently, other
    tools the qform — the scan's orientation is unknown, so refuse rather than guess."""
    header = img.header
    if int(header["qform_code"]) <= 0 or int(header["sform_code"]) <= 0:
        return
    qform, sform = header.get_qform(), header.get_sform()
    if not (np.all(np.isfinite(qform)) and np.all(np.isfinite(sform))):
        return  # _check_affine reports it
    zooms = np.linalg.norm(sform[:3, :3], axis=0)
    if np.any(zooms == 0):
        return
    rotation = sform[:3, :3] / zooms
    if not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-3):
        return  # a sheared sform: no qform can hold it (nibabel stores the nearest one); reported as sheared later
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    moved = float(np.linalg.norm((corners @ qform.T - corners @ sform.T)[:, :3], axis=1).max())
    tolerance = max(1.0, float(np.linalg.norm(sform[:3, :3], axis=0).max()))
    if moved > tolerance:
        raise InputError(
            path,
            f"qform and sform disagree (they place the volume's corners up to {moved:.1f} mm apart): its orientation "
            "is ambiguous; fix the header (e.g. 'fslorient -copysform2qform' or -copyqform2sform)",
        )


#: Voxel orientations a user may state for a file without one (``--assume-orientation``): 3 letters, one of each pair.
ORIENTATION_HELP = "voxel axes as 3 letters from R/L, A/P, S/I, e.g. RAS or LPS"


def stated_affine(path: Path | None, axcodes: str, zooms: tuple[float, ...], shape: tuple[int, ...]) -> np.ndarray:
    """The affine of a grid whose voxel axes point as ``axcodes`` says (``LPS``: i→left, j→posterior, k→superior),
    with the header's voxel sizes and the volume's centre at the origin."""
    codes = tuple(str(axcodes).upper())
    try:
        ornt = axcodes2ornt(codes)
    except Exception as exc:
        raise InputError(path, f"--assume-orientation {axcodes!r} is not an orientation ({ORIENTATION_HELP})") from exc
    if len(codes) != 3 or np.isnan(ornt).any() or len(set(ornt[:, 0].tolist())) != 3:
        raise InputError(path, f"--assume-orientation {axcodes!r} is not an orientation ({ORIENTATION_HELP})")
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world, flip) in enumerate(ornt):
        affine[int(world), axis] = flip * float(zooms[axis])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape[:3], dtype=float) - 1) / 2)
    return affine


def _orientation(path: Path, img: nib.Nifti1Image | nib.Nifti2Image, stated: str | None) -> np.ndarray:
    """The image's affine; with no orientation in the header (qform_code = sform_code = 0), the one the user stated
    — refused without one: nibabel's fallback is a guess that mirrored a BraTS scan's lesion from left to right."""
    header = img.header
    if int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0:
        return np.asarray(img.affine, dtype=np.float64)
    if stated is None:
        raise InputError(
            path,
            "has no orientation (qform_code = sform_code = 0): left and right cannot be told apart, so it is "
            "refused; fix the header (e.g. 'fslorient -setqformcode 1' after checking it), or state the voxel "
            "orientation with --assume-orientation (e.g. --assume-orientation LPS)",
        )
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    return stated_affine(path, stated, zooms, tuple(int(s) for s in img.shape[:3]))


def _squeeze_to_3d(path: Path, shape: tuple[int, ...], volume_index: int | None) -> tuple[slice | int, ...]:
    """Index that turns the on-disk array into 3D, or a clear error for 2D/4D data."""
    dims = len(shape)
    if dims < 3 or (dims == 3 and min(shape) == 1):
        raise InputError(path, f"is a 2D image (shape {shape}); brainuad needs a 3D volume")
    if dims == 3:
        return (slice(None),) * 3
    extra = shape[3:]
    if all(s == 1 for s in extra):
        return (slice(None),) * 3 + (0,) * len(extra)
    if dims == 4:
        if volume_index is None:
            raise InputError(
                path,
                f"is a 4D series with {shape[3]} volumes (shape {shape}); pick one volume, e.g. with "
                "'fslroi IN OUT 0 1' or nibabel's index_img, and pass that file",
            )
        if not 0 <= volume_index < shape[3]:
            raise InputError(path, f"volume index {volume_index} is outside 0..{shape[3] - 1}")
        return (slice(None),) * 3 + (volume_index,)
    raise InputError(path, f"has {dims} dimensions (shape {shape}); brainuad needs a 3D volume")


def _open_nifti(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """The file's NIfTI image object, header parsed and voxels not yet read."""
    _check_readable(path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for garbage input
        raise InputError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def read_grid(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """A NIfTI file's voxel grid — shape (first three axes) and affine, as stored — from its header alone.

    Raises:
        InputError: Missing, unreadable or non-NIfTI file.
    """
    img = _open_nifti(Path(path))
    return tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)


def load_volume(
    path: str | Path,
    kind: VolumeKind = "image",
    *,
    volume_index: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    orientation: str | None = None,
) -> Volume:
    """Read a NIfTI file into a validated :class:`Volume` in RAS+ canonical order.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` (float32; must be finite and not constant), ``"label"`` (integer values, any labels) or
            ``"mask"`` (integer values, converted to bool; may be empty).
        volume_index: For 4D series, which volume to take (otherwise 4D input is an error).
        max_bytes: Refuse volumes whose float32 array would exceed this size, before reading the data.
        orientation: For an image whose header has no orientation (both codes 0), the voxel orientation the user
            states (``LPS``, say); without it such an image is refused. Outputs keep the input's codes (0).

    Returns:
        The volume; ``array`` is float32 for images, int32 for labels, bool for masks.

    Raises:
        InputError: Missing, unreadable, truncated or non-NIfTI file; 2D or 4D data; implausible geometry;
            NaN/Inf voxels; constant images; non-integer label values; too large for memory.
    """
    path = Path(path)
    img = _open_nifti(path)

    shape = tuple(int(s) for s in img.shape)
    index = _squeeze_to_3d(path, shape, volume_index)
    n_voxels = int(np.prod(shape[:3]))
    needed = n_voxels * 4
    if needed > max_bytes:
        raise InputError(
            path,
            f"volume {shape[:3]} needs about {needed / 1024**3:.1f} GiB as float32, over the "
            f"{max_bytes / 1024**3:.1f} GiB limit; down-sample or crop it first",
        )
    affine = _orientation(path, img, orientation) if kind == "image" else np.asarray(img.affine, dtype=np.float64)
    _check_affine(path, affine)
    _check_qform_sform(path, img, shape[:3])
    try:
        data = np.asarray(img.dataobj[index])
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as exc:
        raise InputError(path, f"truncated or corrupt image data ({type(exc).__name__}: {exc})") from exc

    data = _validate_values(path, data, kind)

    array, canonical_affine = to_canonical(data, affine)
    header = img.header.copy() if isinstance(img.header, nib.Nifti1Header) else None
    return Volume(array, canonical_affine, tuple(nib.aff2axcodes(affine)), header, path)


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute axes to the closest RAS+ order (what ``nib.as_closest_canonical`` does, for any dtype).

    ``load_volume`` applies it to every file; use it for arrays indexed in a file's own voxel order (for example
    slice numbers from a CSV) so they land on the same grid as the loaded image.

    Returns:
        The reoriented array and its affine.
    """
    ornt = io_orientation(affine)
    array = np.ascontiguousarray(apply_orientation(data, ornt))
    return array, affine @ inv_ornt_aff(ornt, data.shape)


def _validate_values(path: Path, data: np.ndarray, kind: VolumeKind) -> np.ndarray:
    if np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(path, "complex-valued data; brainuad needs a magnitude image")
    if data.dtype.fields is not None or data.dtype.kind not in "biuf":
        raise InputError(path, f"voxels of type {data.dtype} (colour/RGB or structured); brainuad needs a grey image")
    if kind == "image":
        finite = np.isfinite(data)
        if not finite.all():
            n_bad = int((~finite).sum())
            raise InputError(path, f"{n_bad} voxels are NaN or Inf; fix or mask them before use")
        largest = float(np.abs(data).max())
        if largest > np.finfo(np.float32).max:
            raise InputError(path, f"values up to {largest:.3g} exceed the float32 range; rescale the image first")
        data = data.astype(np.float32, copy=False)
        lo, hi = float(data.min()), float(data.max())
        if hi - lo <= 0:
            raise InputError(path, f"image is constant (every voxel = {lo:g}); no brain to analyse")
        return data
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise InputError(path, "label/mask file contains NaN or Inf")
        if not np.all(data == np.round(data)):
            raise InputError(path, "label/mask file has non-integer values; expected integer labels")
    if kind == "mask":
        return data != 0
    return data.astype(np.int32)


def _array_in_source_order(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine re-ordered from RAS+ back to the voxel order of the source file."""
    current = axcodes2ornt(("R", "A", "S"))
    target = axcodes2ornt(volume.source_axcodes)
    transform = ornt_transform(current, target)
    array = apply_orientation(volume.array, transform)
    affine = volume.affine @ inv_ornt_aff(transform, volume.array.shape)
    return array, affine


#: NIfTI's sform/qform code for coordinates in the MNI152 template's space.
MNI_XFORM_CODE = 4


def save_volume(
    volume: Volume,
    path: str | Path,
    *,
    dtype: np.dtype | type | None = None,
    protect: tuple[str | Path, ...] = (),
    mni: bool = False,
) -> Path:
    """Write ``volume`` to ``path`` in the voxel order of its source file, atomically.

    Args:
        volume: What to write. Its header (if any) supplies the output geometry codes.
        path: Destination ``.nii``/``.nii.gz``.
        dtype: On-disk data type (default: that of ``volume.array``; bool is stored as uint8).
        protect: Paths that must never be overwritten (the inputs); writing onto one is an error.
        mni: The array lies on an MNI grid (a crop of the template): the header says so (sform/qform code 4,
            ``NIFTI_XFORM_MNI_152``) and gives millimetres.

    Returns:
        ``path``.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise OutputError(path, "output name must end in .nii or .nii.gz")
    protected = {Path(p).resolve() for p in protect}
    if volume.path is not None:
        protected.add(Path(volume.path).resolve())
    if path.resolve() in protected:
        raise OutputError(path, "refusing to overwrite an input file")
    array, affine = _array_in_source_order(volume)
    if dtype is None:
        dtype = np.uint8 if array.dtype == np.bool_ else array.dtype
    array = np.asarray(array).astype(dtype, copy=False)
    # Geometry only: free-text fields (descrip, aux_file, extensions: patient names), display windows (cal_min/max)
    # and intent codes of the input describe the input, never a derived map.
    header = nib.Nifti1Header()
    if volume.header is not None:
        header["qform_code"] = volume.header["qform_code"]
        header["sform_code"] = volume.header["sform_code"]
        header.set_xyzt_units(*volume.header.get_xyzt_units())
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(array, affine, header=header)
    # The input's sform/qform codes describe its space; keep them as they are: an output never claims an orientation
    # its input did not have (an input without any keeps none). Without an input header: scanner space (1).
    known = volume.header is not None
    if not known:
        img.header.set_xyzt_units("mm", "sec")  # brainuad's affines are in millimetres
    sform_code = int(header["sform_code"]) if known else 1
    qform_code = int(header["qform_code"]) if known else 1
    if mni:
        # An array on an MNI crop grid: its coordinates are the template's (NIFTI_XFORM_MNI_152), in millimetres.
        sform_code = qform_code = MNI_XFORM_CODE
        img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    img.header["scl_slope"] = np.nan  # written values are final; no scaling on read
    img.header["scl_inter"] = np.nan
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def _is_brainuad_output(file: Path, root: Path, owned: dict[Path, bool]) -> bool:
    """Whether ``file`` (found below ``root``) lies in a staging folder or a folder brainuad wrote (marked): a run
    whose ``--out`` lies inside its input folder must never analyse its own (or an earlier run's) outputs."""
    for parent in file.relative_to(root).parents:
        folder = root / parent
        if ".partial-" in folder.name:
            return True
        if folder not in owned:
            owned[folder] = (folder / OWNER_MARKER).is_file()
        if owned[folder]:
            return True
    return False


def find_nifti_files(inputs: list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """Expand files and folders into a sorted list of NIfTI files (folders searched recursively).

    Inside folders, brainuad's own outputs are skipped: staging folders and folders holding the :data:`OWNER_MARKER`.

    Raises:
        InputError: A given path does not exist, or a folder holds no NIfTI file.
    """
    found: list[Path] = []
    owned: dict[Path, bool] = {}
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files = sorted(
                p
                for p in walk(item)
                if p.is_file() and is_nifti_path(p) and not _is_brainuad_output(p, item, owned)
            )
            if not files:
                raise InputError(item, "folder contains no .nii or .nii.gz file")
            found.extend(files)
        elif item.exists():
            found.append(item)
        else:
            raise InputError(item, "file not found")
    # The same file named twice (absolute and relative, through a symlink, in a folder and alone) would be computed
    # twice into two output folders: refused, naming both.
    seen: dict[Path, Path] = {}
    for path in dict.fromkeys(found):
        real = path.resolve()
        if real in seen:
            raise InputError(path, f"is the same file as {seen[real]}, given twice; give each scan once")
        seen[real] = path
    return list(seen.values())
