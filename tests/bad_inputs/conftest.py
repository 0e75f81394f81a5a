"""The bad-input corpus's shared world (a valid scan, its preprocessed case, a calibrated intensity-baseline model
and the corpus as case folders), and the outcome table (kind × verb) printed at the end of the test run."""

import nibabel as nib
import numpy as np
import pytest

from bad_inputs.corpus import KINDS, OUTCOMES
from brainuad.cli import main


@pytest.fixture(scope="session")
def world(skull_stripped_scan, tmp_path_factory):
    """A valid scan, an intensity-baseline model calibrated on it, and the corpus as BraTS-style case folders."""
    root = tmp_path_factory.mktemp("bad")
    image = nib.load(str(skull_stripped_scan))
    data, affine = np.asarray(image.dataobj, np.float32), image.affine
    assert (
        main(["preprocess", str(skull_stripped_scan), "--out", str(root / "prep"), "--preset", "paper-2mm", "--quiet"])
        == 0
    )
    run = root / "model"
    assert main(["train", "--data", str(root / "prep"), "--out", str(run), "--method", "intensity", "--quiet"]) == 0
    assert main(["calibrate", "--model", str(run), "--healthy", str(root / "prep"), "--device", "cpu"]) == 0
    lesion = (data > np.percentile(data, 99)).astype(np.uint8)
    cases = {}
    for kind in KINDS:
        folder = root / "corpus" / kind.name
        folder.mkdir(parents=True)
        image_path, label_path = folder / f"{kind.name}_t2.nii.gz", folder / f"{kind.name}_seg.nii.gz"
        if kind.target == "image":
            kind.build(data, affine, image_path)
            # The label lies on the bad image's own grid where it has one (flipped, oblique, thick-sliced scans).
            try:
                built = nib.load(str(image_path))
                values = np.asarray(built.dataobj, np.float32)
                assert values.ndim == 3 and np.isfinite(values).all() and values.max() < 1e5
                label = nib.Nifti1Image((values > np.percentile(values, 99)).astype(np.uint8), built.affine)
            except Exception:
                label = nib.Nifti1Image(lesion, affine)
            nib.save(label, str(label_path))
        else:
            nib.save(nib.Nifti1Image(data, affine), str(image_path))
            kind.build(data, affine, label_path)
        cases[kind.name] = (image_path, label_path)
    return {"root": root, "run": run, "cases": cases, "good": skull_stripped_scan, "prep": root / "prep"}


def pytest_terminal_summary(terminalreporter):
    if not OUTCOMES:
        return
    verbs = sorted({verb for _, verb in OUTCOMES})
    kinds = list(dict.fromkeys(kind for kind, _ in OUTCOMES))
    terminalreporter.section("bad-input corpus: outcome per kind and verb")
    terminalreporter.write_line(f"{'kind':26s}" + "".join(f"{v:>14s}" for v in verbs))
    for kind in kinds:
        cells = "".join(f"{OUTCOMES.get((kind, v), '-'):>14s}" for v in verbs)
        terminalreporter.write_line(f"{kind:26s}{cells}")
