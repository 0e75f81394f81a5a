"""``brainuad demo`` end to end at its smallest size, and the synthetic data it is built on."""

import numpy as np
import pytest

from brainuad.cli import main
from brainuad.synthetic import LESION_KINDS, synthetic_subject


@pytest.mark.parametrize("kind", LESION_KINDS)
def test_synthetic_lesions_are_bright_and_inside_the_brain(kind):
    subject = synthetic_subject(7, kind)
    healthy = synthetic_subject(8, None)
    assert healthy.lesion is None and subject.lesion.any()
    assert not (subject.lesion & ~subject.brain).any()
    image = subject.image.array
    tissue = image[subject.brain & ~subject.lesion]
    # T2-hyperintense: brighter than the median of normal tissue.
    assert np.median(image[subject.lesion]) > np.median(tissue)
    assert (image[~subject.brain] == 0).all()  # skull-stripped: zero background


def test_synthetic_subjects_are_reproducible_and_varied():
    a, b, c = synthetic_subject(3), synthetic_subject(3), synthetic_subject(4)
    assert np.array_equal(a.image.array, b.image.array)
    assert not np.array_equal(a.image.array, c.image.array)


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "tiny", "--minutes", "0.1", "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "brainuad download ixi" in printed
    report = (out / "report.html").read_text()
    assert "SYNTHETIC" in report and "<table>" in report and report.count("data:image/png;base64,") == 3
    for name in ("ae", "intensity"):
        assert (out / "evaluation" / name / "summary.json").is_file()
    finding = next((out / "findings").iterdir())
    assert (finding / "report.html").is_file() and (finding / "segmentation.nii.gz").is_file()
