"""``brainuad demo`` end to end at its smallest size, and the synthetic data it is built on."""

import json
import time

import numpy as np
import pytest

from brainuad.data.synthetic import LESION_KINDS, synthetic_subject
from brainuad.demo import STAMP, prepare_folder
from brainuad.errors import OutputError
from brainuad.train.loop import train


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


# The demo itself runs in tests/test_readme.py, exactly as the README's Quick start prints it.


def test_training_stops_at_its_deadline_after_at_least_one_epoch(tmp_path):
    from tiny import tiny_config, write_cases

    data = write_cases(tmp_path / "prep", 2)
    result = train([data], tmp_path / "run", tiny_config(epochs=50), progress=False, deadline=time.monotonic())
    assert result.epochs_done == 1  # at least one epoch, then the budget (already spent) stops it
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_at_time_budget"] is True


def test_demo_folder_is_reused_cleaned_or_refused(tmp_path):
    settings = {"minutes": 1.0, "seed": 0}
    out = tmp_path / "demo"
    assert prepare_folder(out, settings) is None and (out / STAMP).is_file()
    (out / "runs" / "segment").mkdir(parents=True)
    (out / "report.html").write_text("old")
    (out / "my-notes.txt").write_text("mine")
    # Same settings: the earlier run's record comes back and nothing is removed (finished stages are reused).
    assert prepare_folder(out, settings)["settings"] == settings and (out / "runs" / "segment").is_dir()
    # Other settings: what the demo wrote goes, what it did not write stays.
    assert prepare_folder(out, {**settings, "minutes": 2.0}) is None
    assert not (out / "runs").exists() and not (out / "report.html").exists()
    assert (out / "my-notes.txt").read_text() == "mine"
    # A folder the demo never wrote is refused, untouched.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(OutputError, match="not written by 'brainuad demo'"):
        prepare_folder(foreign, settings)
    assert [p.name for p in foreign.iterdir()] == ["scan.nii.gz"]
