"""The preprocessed case folder: its files, reading and writing it, and unique case names for input files.

A preprocessed case is a folder::

    <name>/image.nii.gz        scaled scan on the MNI crop grid (float32, 0…1, zero outside the brain)
    <name>/brain_mask.nii.gz   brain mask on the MNI crop grid (uint8)
    <name>/brain_mask_native.nii.gz  brain mask in the scan's native space and voxel order
    <name>/transform.json      MNI ↔ native transform (plain 4×4 matrices) and the crop grid
    <name>/record.json         input path and hash, settings, QC numbers, library versions; written last
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainuad.errors import InputError
from brainuad.io.volumes import (
    Volume,
    atomic_folder,
    load_volume,
    read_json,
    safe_name,
    save_volume,
    strip_nifti_suffix,
    write_json,
)
from brainuad.preprocess.registration import Transform, to_native
from brainuad.preprocess.templates import Grid

#: The files of a complete preprocessed case folder (``brainuad preprocess`` writes record.json last).
CASE_FILES = ("image.nii.gz", "brain_mask.nii.gz", "transform.json", "record.json")


def is_case_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a complete preprocessed case."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in CASE_FILES)


@dataclass
class PreprocessedCase:
    """One scan in the model's space, with everything needed to go back to the scan.

    Attributes:
        name: Case name (folder name).
        image: Scaled image on the MNI crop grid.
        brain_mask: Brain mask on the MNI crop grid (bool).
        transform: MNI ↔ native transform.
        grid: The MNI crop grid.
        record: Provenance and QC (JSON-ready).
        brain_mask_native: Brain mask on the native grid (bool), if kept.
    """

    name: str
    image: Volume
    brain_mask: Volume
    transform: Transform
    grid: Grid
    record: dict = field(default_factory=dict)
    brain_mask_native: Volume | None = None

    def to_native(self, array_mni: np.ndarray, order: int = 1) -> Volume:
        """Map an array on this case's crop grid back to the native scan (order 0 for labels)."""
        return to_native(array_mni, self.transform, self.grid, order=order)


#: What a case folder of an older brainuad (before the ownership marker) held: such a folder may be replaced.
LEGACY_CASE_FILES = (*CASE_FILES, "brain_mask_native.nii.gz")


def save_case(case: PreprocessedCase, folder: str | Path) -> Path:
    """Write a case folder atomically (built beside it under a temporary name, then renamed into place)."""
    folder = Path(folder)
    with atomic_folder(folder, LEGACY_CASE_FILES) as staging:
        save_volume(case.image, staging / "image.nii.gz", dtype=np.float32, mni=True)
        save_volume(case.brain_mask, staging / "brain_mask.nii.gz", dtype=np.uint8, mni=True)
        if case.brain_mask_native is not None:
            save_volume(case.brain_mask_native, staging / "brain_mask_native.nii.gz", dtype=np.uint8)
        write_json(staging / "transform.json", {"grid": case.grid.to_dict(), **case.transform.to_dict()})
        write_json(staging / "record.json", case.record)  # last: its presence marks a complete case
    return folder


def load_case(folder: str | Path) -> PreprocessedCase:
    """Read a case folder written by :func:`save_case`.

    Raises:
        InputError: The folder is incomplete or its files are inconsistent.
    """
    folder = Path(folder)
    if not is_case_folder(folder):
        missing = [n for n in CASE_FILES if not (folder / n).is_file()]
        raise InputError(folder, f"not a complete preprocessed case (missing {', '.join(missing)})")
    record = read_json(folder / "record.json")
    transform_data = read_json(folder / "transform.json")
    try:
        grid = Grid.from_dict(transform_data["grid"])
        transform = Transform.from_dict(transform_data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(folder / "transform.json", f"invalid transform file ({exc})") from exc
    image = load_volume(folder / "image.nii.gz", "image")
    mask = load_volume(folder / "brain_mask.nii.gz", "mask")
    for vol, what in ((image, "image"), (mask, "brain_mask")):
        if vol.shape != grid.shape or not np.allclose(vol.affine, grid.affine_array, atol=1e-4):
            raise InputError(vol.path, f"{what} does not lie on the case's crop grid {grid.shape}")
    native_path = folder / "brain_mask_native.nii.gz"
    native_mask = load_volume(native_path, "mask") if native_path.is_file() else None
    return PreprocessedCase(folder.name, image, mask, transform, grid, record, native_mask)


def case_names(paths: list[Path]) -> dict[Path, str]:
    """Unique, readable case names: the file name, prefixed by parent folders where names collide.

    ``ms/patient07/T2.nii.gz`` and ``ms/patient08/T2.nii.gz`` become ``patient07_T2`` and ``patient08_T2``.
    """
    names: dict[Path, str] = {}
    depth = {p: 0 for p in paths}

    def name_of(p: Path) -> str:
        parts = (
            [*p.parent.parts[len(p.parent.parts) - depth[p] :], strip_nifti_suffix(p)]
            if depth[p]
            else [strip_nifti_suffix(p)]
        )
        return "_".join(part.strip("/") for part in parts if part not in ("", "/"))

    hashed: set[Path] = set()
    for _ in range(8):
        names = {p: safe_name(name_of(p)) + (_path_tag(p) if p in hashed else "") for p in paths}
        groups: dict[str, list[Path]] = {}
        for p, n in names.items():
            groups.setdefault(n, []).append(p)
        clashes = [group for group in groups.values() if len(group) > 1]
        if not clashes:
            break
        for group in clashes:
            for p in group:
                # Files of one folder whose names differ only in characters safe_name replaces (``a b`` / ``a_b``)
                # or in the suffix (``c.nii`` / ``c.nii.gz``): a parent prefix cannot tell them apart, a tag can.
                if sum(q.parent == p.parent for q in group) > 1:
                    hashed.add(p)
                else:
                    depth[p] += 1
    return names


def _path_tag(path: Path) -> str:
    """A short, stable tag of a file's full name (the same file always gets the same case name)."""
    import hashlib

    return "-" + hashlib.sha256(path.name.encode()).hexdigest()[:6]
