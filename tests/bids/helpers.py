"""A small BIDS dataset of synthetic scans, and a fixed registration so detection is exactly repeatable.

The scans are the MNI template resampled onto a 4 mm grid in scanner space = MNI space, so the true MNI → native
transform is the identity. ANTs is not bit-reproducible (preprocess/registration.py), so the tests that compare file
hashes between runs use that known transform instead of estimating it; everything else runs as it does for users.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from brainuad.preprocess.registration import Transform

#: Participant → session → the T2w variants (entities); every session also holds one T1w and one FLAIR.
LAYOUT = {
    "01": {None: ["run-1", "run-2"]},
    "02": {"1": [""], "2": ["run-1", "run-2"]},
    "03": {None: ["acq-fast", "acq-slow"]},
}
T2W_SCANS = 7


def fixed_registration(brain, kind="rigid", contrast="t1", seed=0, head=False, template_spacing=1) -> Transform:
    """The known transform of :func:`write_dataset`'s scans (MNI = scanner space), in place of ANTs."""
    return Transform(np.eye(4), brain.affine.copy(), brain.shape, brain.source_axcodes, kind)


def _base_volume(spacing: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    from brainuad.preprocess.registration import to_native
    from brainuad.preprocess.templates import Grid, mni_template

    template = mni_template("t1")
    shape = tuple(round(mm / spacing) for mm in (168, 200, 156))
    affine = np.diag([spacing] * 3 + [1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2
    grid = Grid("t", template.shape, tuple(map(tuple, template.affine)))
    array = to_native(template.array, Transform(np.eye(4), affine, shape, ("R", "A", "S")), grid).array * 800.0
    return array.astype(np.float32), affine


def write_dataset(root: Path) -> Path:
    """3 participants (sub-02 with 2 sessions), T1w, T2w (7 scans, one a symbolic link) and FLAIR; sub-02 has a
    bright 'lesion'."""
    base, affine = _base_volume()
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "brainuad test", "BIDSVersion": "1.10.0"}))
    (root / "README").write_text("Synthetic heads for brainuad's tests.\n")
    rows = ["participant_id\tgroup", "sub-01\tcontrol", "sub-02\tpatient", "sub-03\tcontrol"]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    seed = 0
    for sub, sessions in LAYOUT.items():
        for ses, variants in sessions.items():
            folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
            folder.mkdir(parents=True, exist_ok=True)
            prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            names = [f"{prefix}_{v}_T2w" if v else f"{prefix}_T2w" for v in variants]
            for name in [*names, f"{prefix}_T1w", f"{prefix}_FLAIR"]:
                seed += 1
                array = base * (0.9 + 0.2 * np.random.default_rng(seed).random())
                if sub == "02":
                    array[20:24, 26:30, 22:25] *= 2.0
                image = nib.Nifti1Image(array, affine)
                image.header.set_xyzt_units("mm", "sec")
                target = folder / f"{name}.nii.gz"
                if name.endswith("acq-slow_T2w"):  # as in a DataLad dataset: a symbolic link into the annex
                    annex = root.parent / "annex" / target.name
                    annex.parent.mkdir(exist_ok=True)
                    nib.save(image, str(annex))
                    target.symlink_to(annex)
                else:
                    nib.save(image, str(target))
                sidecar = {"MagneticFieldStrength": 3, "Manufacturer": "synthetic"}
                (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return root


def snapshot(root: Path, skip: str = "derivatives") -> dict[str, int]:
    """Every file under ``root`` (outside ``skip``) with its size and modification time: to prove nothing changed."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.relative_to(root).parts[0] != skip
    }
