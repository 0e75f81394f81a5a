"""The calibration record (``calibration.json``) and the trained-run object: validation on load, old files, the one
writer, and the one place the operating threshold is decided."""

import json
import math

import pytest
import torch

from brainuad.config import Config, PostprocessConfig, from_dict, to_dict
from brainuad.errors import BrainuadError, InputError
from brainuad.infer.calibration import (
    CALIBRATION_FILE,
    Calibration,
    SliceReference,
    read_calibration,
    write_calibration,
)
from brainuad.infer.postprocessing import PostprocessingSizes, postprocessing_sizes
from brainuad.infer.trained import TrainedModel
from brainuad.io.shipped import builtin_names, resolve_model_dir

#: What 'brainuad calibrate' wrote before the notes, the held-out count and the contrast check existed.
OLD_FORMAT = {
    "method": "healthy voxel false-positive rate",
    "false_positive_rate": 0.001,
    "threshold": 0.25,
    "healthy_cases": ["/data/prep/a", "/data/prep/b", "/data/prep/c"],
    "slice_errors": {"mean": [0.0, 1.5, 2.5], "std": [0.0, 0.5, 0.25]},
    "healthy_scan_scores": [0.2, 0.3, 0.4],
    "postprocessing": {"median_size": 3, "erosion_voxels": 1, "min_component_voxels": 3},
    "training_scans_among_healthy": 0,  # a key this version no longer writes
}


def _write(folder, payload) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = payload if isinstance(payload, str) else json.dumps(payload)
    (folder / CALIBRATION_FILE).write_text(text)


def test_an_old_calibration_loads_and_round_trips(tmp_path):
    _write(tmp_path / "run", OLD_FORMAT)
    calibration = read_calibration(tmp_path / "run")
    assert calibration.threshold == 0.25 and calibration.method == "healthy voxel false-positive rate"
    assert calibration.slice_errors == SliceReference((0.0, 1.5, 2.5), (0.0, 0.5, 0.25))
    assert calibration.postprocessing == PostprocessingSizes(3, 1, 3)
    assert calibration.healthy_scores == (0.2, 0.3, 0.4)
    assert calibration.held_out_healthy_scans is None and calibration.tuning_cases is None  # absent, not invented
    assert calibration.extra == {"training_scans_among_healthy": 0}
    written = calibration.to_dict()
    assert {k: v for k, v in written.items() if k != "csf_to_white_matter"} == OLD_FORMAT
    assert read_calibration(tmp_path / "none") is None  # never calibrated


@pytest.mark.parametrize("name", builtin_names())
def test_the_shipped_calibrations_load_unchanged(name):
    path = resolve_model_dir(f"builtin:{name}") / CALIBRATION_FILE
    calibration = read_calibration(f"builtin:{name}")
    assert calibration.to_dict() == json.loads(path.read_text())
    assert calibration.source == f"calibration.json ({calibration.method})"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": float("nan")}, "'threshold' must be a finite number, got nan"),
        ({"threshold": None}, "'threshold' must be a finite number, got None"),
        ({"threshold": "0.3"}, "'threshold' must be a finite number"),
        ({"threshold": True}, "'threshold' must be a finite number"),
        ({"notes": "too few scans"}, "'notes' must be a list of strings"),
        ({"healthy_scan_scores": [0.1, "x"]}, "'healthy_scan_scores' must be a list of numbers"),
        ({"held_out_healthy_scans": True}, "'held_out_healthy_scans' must be a count"),
        ({"slice_errors": {"mean": [1.0], "std": [1.0, 2.0]}}, "'slice_errors' must be 'mean' and 'std' lists of one"),
        ({"slice_errors": [1.0, 2.0]}, "'slice_errors' must be an object with 'mean' and 'std'"),
        ({"postprocessing": {"median_size": 3.5}}, "'postprocessing' must be an object with"),
        ({"method": 3}, "'method' must be a string"),
        ({"tuning_cases_sha256": "abc"}, "'tuning_cases_sha256' must be a list of strings"),
    ],
)
def test_a_bad_calibration_is_refused_naming_the_file_and_the_fix(tmp_path, change, message):
    _write(tmp_path, {**OLD_FORMAT, **change})
    with pytest.raises(InputError) as caught:
        read_calibration(tmp_path)
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / CALIBRATION_FILE}: ") and message in text
    assert "run 'brainuad calibrate'" in text


def test_a_calibration_that_is_not_an_object_is_refused(tmp_path):
    _write(tmp_path, "[1, 2]")
    with pytest.raises(InputError, match="not a calibration"):
        read_calibration(tmp_path)
    _write(tmp_path, "{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_calibration(tmp_path)


def test_the_writer_refuses_shipped_models_and_non_finite_thresholds(tmp_path):
    calibration = Calibration(method="m", threshold=0.5, notes=("n",))
    write_calibration(tmp_path, calibration)
    assert read_calibration(tmp_path) == calibration
    name = builtin_names()[0]
    with pytest.raises(BrainuadError, match="read-only"):
        write_calibration(f"builtin:{name}", calibration)
    with pytest.raises(BrainuadError, match="finite"):
        Calibration(method="m", threshold=math.inf)


def _trained(tmp_path, calibration):
    return TrainedModel(tmp_path, Config(), torch.nn.Identity(), torch.device("cpu"), calibration)


def test_the_operating_threshold_is_decided_in_one_place(tmp_path):
    calibrated = _trained(tmp_path, Calibration(method="best pooled Dice on labelled tuning cases", threshold=0.3))
    assert calibrated.threshold() == (0.3, "calibration.json (best pooled Dice on labelled tuning cases)")
    # A given threshold wins over the calibrated one, and says where it came from.
    assert calibrated.threshold(0.7) == (0.7, "given")
    assert calibrated.threshold(0.1, "best pooled Dice (0.5) on 2 tuning cases")[1].startswith("best pooled Dice")
    with pytest.raises(BrainuadError, match="finite"):
        calibrated.threshold(float("nan"))
    uncalibrated = _trained(tmp_path, None)
    assert uncalibrated.threshold(0.2) == (0.2, "given")
    with pytest.raises(BrainuadError) as caught:
        uncalibrated.threshold(otherwise="pass --threshold VALUE")
    text = str(caught.value)
    assert str(tmp_path) in text and "no threshold" in text
    assert "run 'brainuad calibrate'" in text and "pass --threshold VALUE" in text


def test_a_builtin_model_loads_as_one_object():
    name = builtin_names()[0]
    trained = TrainedModel.load(f"builtin:{name}", "cpu")
    assert trained.builtin and trained.run_dir == resolve_model_dir(f"builtin:{name}")
    assert trained.calibration is not None and trained.threshold()[0] == trained.calibration.threshold
    assert len(trained.weights_sha256) == 64 and not trained.model.training
    assert trained.banner is None and trained.report_warning is None  # learned something, or no check shipped


def test_postprocessing_section_defaults_for_old_configs_and_drives_the_sizes():
    data = to_dict(Config())
    assert data["postprocessing"] == {"median_mm": 5.0, "erosion_mm": 2.0, "min_component_mm3": 20.0}
    del data["postprocessing"]  # a config.json written before the section existed
    assert from_dict(Config, data).postprocessing == PostprocessConfig()
    wider = PostprocessConfig(median_mm=9.0, erosion_mm=0.0, min_component_mm3=64.0)
    assert postprocessing_sizes(2.0, wider) == PostprocessingSizes(5, 0, 8)
    assert postprocessing_sizes(2.0) == PostprocessingSizes(3, 1, 3)  # the paper's, as before
