"""Portable, private outputs (issue #36): no absolute path of the machine in any JSON that detect, bids, train,
calibrate, evaluate or export write; a run folder moved elsewhere still detects; training caches live outside the
run and go when training ends; ``brainuad export`` writes a model folder to share, and detect works from it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainuad.cli import main
from tiny import TINY_CLI, write_cases

sys.path.insert(0, str(Path(__file__).with_name("bids")))
from helpers import fixed_registration, write_dataset

TINY = [*TINY_CLI, "--epochs", "1", "--batch-size", "1", "--augment", "off"]
CPU = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, brainuad_cache_dir):
    """Every verb's outputs on tiny scans: preprocess, train (a tiny autoencoder), calibrate, detect, bids
    participant, evaluate and export, with the known registration of tests/bids/helpers.py (fast, exact)."""
    root = tmp_path_factory.mktemp("portable")
    bids = write_dataset(root / "ds")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("brainuad.preprocess.pipeline.estimate_transform", fixed_registration)
        scans = [bids / "sub-01/anat/sub-01_run-1_T2w.nii.gz", bids / "sub-03/anat/sub-03_acq-fast_T2w.nii.gz"]
        prep = ["preprocess", *map(str, scans), "--out", str(root / "prep"), "--preset", "paper-2mm"]
        assert main([*prep, "--skull-strip", "none", "--template-contrast", "t2", "--quiet"]) == 0
        run = root / "runs" / "ae"
        assert main(["train", "--data", str(root / "prep"), "--out", str(run), *TINY]) == 0
        assert main(["calibrate", "--model", str(run), "--device", "cpu"]) == 0  # on the run's validation split
        patient = bids / "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz"
        assert main(["detect", str(patient), "--model", str(run), "--out", str(root / "det"), *CPU]) == 0
        derivatives = bids / "derivatives" / "brainuad"
        args = ["bids", str(bids), str(derivatives), "participant", "--model", str(run), "--participant-label", "02"]
        assert main([*args, *CPU]) == 0
        case = root / "labelled" / "case01"
        case.mkdir(parents=True)
        shutil.copyfile(patient, case / "case01_t2.nii.gz")
        image = nib.load(str(patient))
        label = np.zeros(image.shape, np.uint8)
        label[20:24, 26:30, 22:25] = 1
        nib.save(nib.Nifti1Image(label, image.affine), str(case / "case01_seg.nii.gz"))
        evaluate = ["evaluate", "--model", str(run), "--cases", str(root / "labelled"), "--out", str(root / "eval")]
        assert main([*evaluate, *CPU]) == 0
        assert main(["export", str(run), str(root / "export")]) == 0
    return {"root": root, "bids": bids, "run": run, "patient": patient, "derivatives": derivatives}


def _json_files(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.json"))


def test_no_absolute_path_in_any_record(outputs, tmp_path_factory):
    root, derivatives = outputs["root"], outputs["derivatives"]
    folders = [outputs["run"], root / "det", derivatives, root / "eval", root / "export"]
    files = _json_files(*folders)
    assert len(files) > 20 and {"split.json", "summary.json", "calibration.json"} <= {p.name for p in files}
    prefixes = {str(tmp_path_factory.getbasetemp()), os.path.realpath(tmp_path_factory.getbasetemp())}
    for path in files:
        text = path.read_text()
        assert not any(p in text for p in prefixes), f"{path} holds an absolute path: {text[:2000]}"
        assert "file://" not in text, path
    # What the records name instead: the model by a relative path or builtin:NAME@VERSION+SHA, scans relative.
    findings = json.loads((root / "det" / "sub-02_ses-1_T2w" / "summary.json").read_text())
    assert findings["model"]["name"] == "../../runs/ae" and findings["input"]["sha256"]
    assert (root / "det" / "sub-02_ses-1_T2w" / findings["input"]["path"]).resolve() == outputs["patient"].resolve()
    description = json.loads((derivatives / "dataset_description.json").read_text())
    assert description["DatasetLinks"] == {"raw": "../.."} and description["SourceDatasets"] == [{"URL": "bids:raw:"}]
    sidecar = next(derivatives.glob("sub-02/ses-1/anat/*_desc-lesions_mask.json"))
    model = json.loads(sidecar.read_text())["Model"]
    assert not Path(model).is_absolute() and (derivatives / model).resolve() == outputs["run"].resolve()
    split = json.loads((outputs["run"] / "split.json").read_text())
    assert all(p.startswith("../../prep/") for p in split["train"] + split["val"])
    evaluation = json.loads((root / "eval" / "summary.json").read_text())
    assert evaluation["model"]["name"] == "../runs/ae" and evaluation["model"]["weights_sha256"]


def test_training_cache_lives_outside_the_run_and_is_removed(outputs, brainuad_cache_dir):
    assert not (outputs["run"] / "cache").exists()
    assert not any(p.suffix in (".npy", ".npz") for p in outputs["run"].rglob("*"))
    assert not list((brainuad_cache_dir / "training").glob("*/volumes.npy"))  # removed once training finished


def test_volume_cache_is_keyed_by_content_and_kept_while_another_run_uses_it(tmp_path, brainuad_cache_dir):
    from brainuad.data.datasets import VolumeCache

    first, other = write_cases(tmp_path / "a", 2), write_cases(tmp_path / "b", 2, seed=1)
    a = VolumeCache(sorted(first.iterdir()))
    b = VolumeCache(sorted(other.iterdir()))
    assert a.path != b.path and a.path.is_relative_to(brainuad_cache_dir)  # different data, different caches
    again = VolumeCache(sorted(first.iterdir()))  # another run on the same data: the same cache, reused
    assert again.path == a.path
    assert not a.remove() and a.path.is_file()  # still used by the other run
    assert again.remove() and not a.path.exists() and not a.path.parent.exists()
    assert float(np.asarray(again.array[0], np.float32).sum()) > 0  # still mapped in this process
    assert b.remove()


def test_a_moved_run_folder_loads_and_detects(outputs, tmp_path):
    copy = shutil.copytree(outputs["run"], tmp_path / "copy")
    moved = Path(shutil.move(copy, tmp_path / "elsewhere" / "model"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("brainuad.preprocess.pipeline.estimate_transform", fixed_registration)
        out = tmp_path / "findings"
        assert main(["detect", str(outputs["patient"]), "--model", str(moved), "--out", str(out), *CPU]) == 0
    summary = json.loads((out / "sub-02_ses-1_T2w" / "summary.json").read_text())
    expected = json.loads((outputs["root"] / "det" / "sub-02_ses-1_T2w" / "summary.json").read_text())
    assert summary["model"]["name"] == "../../elsewhere/model"
    assert summary["scan_score"] == pytest.approx(expected["scan_score"])


def test_export_holds_no_scans_and_detect_works_from_it(outputs, tmp_path, capsys):
    export = outputs["root"] / "export"
    names = sorted(p.name for p in export.iterdir())
    assert {"model.safetensors", "config.json", "calibration.json", "MODEL_CARD.md"} <= set(names)
    assert not [n for n in names if n.endswith((".nii", ".nii.gz", ".npy", ".npz"))] and "split.json" not in names
    assert not any(p.is_dir() for p in export.iterdir())
    card = (export / "MODEL_CARD.md").read_text()
    assert "# export" in card and "Threshold" in card
    calibration = json.loads((export / "calibration.json").read_text())
    assert all("/" not in c for c in calibration["healthy_cases"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("brainuad.preprocess.pipeline.estimate_transform", fixed_registration)
        out = tmp_path / "findings"
        assert main(["detect", str(outputs["patient"]), "--model", str(export), "--out", str(out), *CPU]) == 0
    summary = json.loads((out / "sub-02_ses-1_T2w" / "summary.json").read_text())
    expected = json.loads((outputs["root"] / "det" / "sub-02_ses-1_T2w" / "summary.json").read_text())
    assert summary["scan_score"] == pytest.approx(expected["scan_score"])
    assert summary["model"]["weights_sha256"] == expected["model"]["weights_sha256"]
    # An existing non-empty OUT is refused, and nothing is written.
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", str(outputs["run"]), str(taken)]) == 1
    assert "not empty" in capsys.readouterr().err and sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "x")]) == 1 and not (tmp_path / "x").exists()


def test_a_builtin_model_is_named_by_name_version_and_identity():
    from brainuad import __version__
    from brainuad.infer.trained import TrainedModel

    trained = TrainedModel.load("builtin:t2", "cpu")
    name = trained.name("/anywhere")
    assert name == f"builtin:t2@{__version__}+{trained.identity[:12]}"
    assert trained.calibration_sha256 and trained.identity != trained.weights_sha256
