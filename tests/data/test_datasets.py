import numpy as np
import pytest

from brainuad.data.datasets import (
    find_brats_cases,
    find_healthy_scans,
    find_labelled_cases,
    find_ms_cases,
    read_slice_labels,
)
from brainuad.errors import InputError
from conftest import write_nifti


def touch(path):
    return write_nifti(path, np.random.rand(4, 4, 4).astype(np.float32))


def test_healthy_ixi_names_and_modality_filter(tmp_path):
    touch(tmp_path / "IXI002-Guys-0828-T2.nii.gz")
    touch(tmp_path / "IXI002-Guys-0828-T1.nii.gz")
    touch(tmp_path / "sub" / "IXI012-HH-1211-T2.nii.gz")
    touch(tmp_path / "other_scan.nii")
    scans = find_healthy_scans(tmp_path, "T2")
    assert {s.subject for s in scans} == {"IXI002", "IXI012", "other_scan"}
    assert {s.site for s in scans if s.site} == {"Guys", "HH"}
    assert len(find_healthy_scans(tmp_path, None)) == 4
    with pytest.raises(InputError, match="no healthy"):
        find_healthy_scans(tmp_path / "sub", "PD")


def test_brats_and_ms_layouts(tmp_path):
    for case in ("Brats18_A_1", "Brats18_B_1"):
        touch(tmp_path / "brats" / case / f"{case}_t2.nii.gz")
        touch(tmp_path / "brats" / case / f"{case}_flair.nii.gz")
        touch(tmp_path / "brats" / case / f"{case}_seg.nii.gz")
    touch(tmp_path / "ms" / "patient07" / "T2.nii.gz")
    touch(tmp_path / "ms" / "patient07" / "FLAIR.nii.gz")
    touch(tmp_path / "ms" / "patient07" / "GOLD_STANDARD.nii.gz")
    touch(tmp_path / "stroke" / "T2_head.nii.gz")
    touch(tmp_path / "stroke" / "lesion.nii.gz")

    brats = find_brats_cases(tmp_path / "brats")
    assert [c.name for c in brats] == ["Brats18_A_1", "Brats18_B_1"]
    assert brats[0].image_path.name == "Brats18_A_1_t2.nii.gz" and brats[0].label_path.name.endswith("_seg.nii.gz")
    assert find_brats_cases(tmp_path / "brats", "flair")[0].image_path.name.endswith("_flair.nii.gz")

    ms = find_ms_cases(tmp_path / "ms")
    assert [(c.name, c.image_path.name, c.label_path.name) for c in ms] == [
        ("patient07", "T2.nii.gz", "GOLD_STANDARD.nii.gz")
    ]
    stroke = find_labelled_cases(tmp_path / "stroke")
    assert stroke[0].label_path.name == "lesion.nii.gz"
    # Named by its folder even when the folder itself is given, and not called "ms": it is a stroke.
    assert (stroke[0].name, stroke[0].layout) == ("stroke", "image+mask")
    assert find_ms_cases(tmp_path / "ms" / "patient07")[0].name == "patient07"
    assert len(find_labelled_cases(tmp_path)) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no labelled cases"):
        find_labelled_cases(tmp_path / "empty")


def test_slice_label_csv(tmp_path):
    touch(tmp_path / "scans" / "p1.nii.gz")
    csv = tmp_path / "labels.csv"
    csv.write_text("image,slice,label\nscans/p1.nii.gz,0,0\nscans/p1.nii.gz,1,1\n")
    (case,) = read_slice_labels(csv)
    assert case.slice_labels == {0: 0, 1: 1} and case.label_path is None
    csv.write_text("image,slice,label\nscans/p1.nii.gz,0,0.5\n")
    with pytest.raises(InputError, match="line 2"):
        read_slice_labels(csv)
    csv.write_text("image,slice,label\nscans/missing.nii.gz,0,1\n")
    with pytest.raises(InputError, match="not found"):
        read_slice_labels(csv)
    csv.write_text("image,slice\n")
    with pytest.raises(InputError, match="missing column"):
        read_slice_labels(csv)
