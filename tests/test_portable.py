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


# --- review fixes: symlinked and moved run folders, the cache's life, export into ".", older sidecars ------------


def _cases_with_inputs(folder: Path, n: int = 3, seed: int = 0) -> Path:
    """Tiny case folders whose record.json names the sha256 of the raw scan they came from (as preprocess writes)."""
    write_cases(folder, n, seed=seed)
    for case in sorted(folder.iterdir()):
        record = json.loads((case / "record.json").read_text())
        record["input"] = {"path": f"{case.name}.nii.gz", "sha256": f"{seed:02d}{case.name:0>62}"}
        (case / "record.json").write_text(json.dumps(record))
    return folder


def _tiny_train(data: Path, run: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(run), *TINY, "--seed", "0", *extra])


def test_a_run_folder_reached_through_a_symlink_resumes_and_refuses_its_training_scans(tmp_path, capsys):
    prep = _cases_with_inputs(tmp_path / "prep")
    deep = tmp_path / "scratch" / "project" / "user"  # deeper than the link: a ".." climbs elsewhere
    deep.mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "runs").symlink_to(deep)  # runs -> /scratch/...
    run = tmp_path / "home" / "runs" / "ae"
    assert _tiny_train(prep, run) == 0, capsys.readouterr().err
    split = json.loads((run / "split.json").read_text())
    assert all((run / e).is_dir() for e in split["train"] + split["val"])  # entries hold through the link
    assert _tiny_train(prep, run, "--resume", "--epochs", "2") == 0, capsys.readouterr().err
    assert all(len(h) == 64 for h in split["input_sha256"]["train"])
    capsys.readouterr()
    assert main(["calibrate", "--model", str(run), "--healthy", str(prep), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "were in the model's training split" in err and "Traceback" not in err
    assert main(["calibrate", "--model", str(run), "--device", "cpu"]) == 0, capsys.readouterr().err


def test_a_run_folder_moved_without_its_data_still_refuses_its_training_scans(tmp_path, capsys):
    prep = _cases_with_inputs(tmp_path / "prep")
    run = tmp_path / "runs" / "ae"
    assert _tiny_train(prep, run) == 0, capsys.readouterr().err
    moved = Path(shutil.copytree(run, tmp_path / "far" / "away" / "model"))
    split = json.loads((moved / "split.json").read_text())
    assert not any((moved / e).is_dir() for e in split["train"])  # the relative entries are broken now
    capsys.readouterr()
    assert main(["calibrate", "--model", str(moved), "--healthy", str(prep), "--device", "cpu"]) == 1
    assert "were in the model's training split" in capsys.readouterr().err  # recognised by the input hashes
    assert main(["calibrate", "--model", str(moved), "--device", "cpu"]) == 1  # its validation split: not here
    err = capsys.readouterr().err
    assert "not found from here" in err and "Traceback" not in err
    # An older split (no hashes) that no longer resolves: the check cannot be made, and the calibration says so.
    del split["input_sha256"]
    (moved / "split.json").write_text(json.dumps(split))
    with pytest.warns(UserWarning, match="could not be checked"):
        assert main(["calibrate", "--model", str(moved), "--healthy", str(prep), "--device", "cpu"]) == 0
    notes = json.loads((moved / "calibration.json").read_text())["notes"]
    assert any("could not be checked" in n for n in notes)


def test_the_held_out_healthy_check_recognises_training_scans_of_a_moved_run(tmp_path, capsys):
    from brainuad.errors import BrainuadError
    from brainuad.evaluate.scores import held_out_healthy
    from brainuad.infer.trained import TrainedModel

    prep = _cases_with_inputs(tmp_path / "prep")
    run = tmp_path / "runs" / "ae"
    assert _tiny_train(prep, run) == 0, capsys.readouterr().err
    moved = Path(shutil.copytree(run, tmp_path / "far" / "away" / "model"))
    trained = TrainedModel.load(moved, "cpu", calibration=False)
    with pytest.raises(BrainuadError, match="trained, validated or calibrated on"):
        held_out_healthy(trained, [prep], tmp_path / "cache")
    split = json.loads((moved / "split.json").read_text())
    del split["input_sha256"]
    (moved / "split.json").write_text(json.dumps(split))
    with pytest.warns(UserWarning, match="could not be checked"):
        held_out_healthy(trained, [prep], tmp_path / "cache")


def test_relative_path_follows_symlinks_on_both_sides(tmp_path):
    from brainuad.io.portable import relative_path, resolve_relative

    (tmp_path / "scratch" / "a" / "b").mkdir(parents=True)
    (tmp_path / "data" / "case").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "scratch" / "a")
    base = tmp_path / "link" / "b"
    entry = relative_path(tmp_path / "data" / "case", base)
    assert (base / entry).resolve() == (tmp_path / "data" / "case").resolve()
    assert resolve_relative(entry, base).is_dir()
    (tmp_path / "annex").write_text("scan")
    (tmp_path / "data" / "sub-01_T2w.nii.gz").symlink_to(tmp_path / "annex")  # a DataLad file: a link
    entry = relative_path(tmp_path / "data" / "sub-01_T2w.nii.gz", base)
    assert entry.endswith("/data/sub-01_T2w.nii.gz") and (base / entry).read_text() == "scan"


def test_a_released_cache_is_still_removed(tmp_path):
    from brainuad.data.datasets import VolumeCache

    cases = sorted(write_cases(tmp_path / "c", 2, seed=3).iterdir())
    cache = VolumeCache(cases)
    cache.release()  # a DDP rank before the removal
    assert cache.remove() and not cache.path.exists() and not cache.path.parent.exists()
    assert not cache.remove()  # removed already (by another rank): nothing to do, nothing recreated
    assert not cache.path.parent.exists()
    # Released by one user while another still uses it: kept until the last one removes it.
    first, second = VolumeCache(cases), VolumeCache(cases)
    first.release()
    assert not first.remove() and first.path.is_file()
    assert second.remove() and not second.path.parent.exists()


def test_a_killed_cache_build_leaves_no_partial_file_behind(tmp_path):
    from brainuad.data.datasets import VolumeCache

    cases = sorted(write_cases(tmp_path / "c", 2, seed=4).iterdir())
    cache = VolumeCache(cases)
    folder = cache.path.parent
    assert cache.remove()
    folder.mkdir(parents=True)
    stale = [folder / "volumes.partial-999999.npy", folder / "volumes.partial-999999.json"]
    for path in stale:
        path.write_bytes(b"killed mid-build")
    again = VolumeCache(cases)
    assert not any(p.exists() for p in stale) and again.path.is_file()
    assert again.remove()


def test_cache_lock_files_open_read_only(tmp_path):
    from brainuad.data.datasets import _CacheLock

    folder = tmp_path / "cache"
    folder.mkdir()
    for name in (".build.lock", ".use.lock"):
        (folder / name).touch()
        (folder / name).chmod(0o444)  # another user's lock file
    lock = _CacheLock(folder)
    with lock.exclusive():
        pass
    assert lock.use is not None
    lock.release()


@pytest.mark.parametrize("where", ["under_a_file", "read_only", "proc"])
def test_train_with_an_unusable_cache_folder_is_a_clear_error(tmp_path, capsys, monkeypatch, where):
    prep = write_cases(tmp_path / "prep", 2)
    if where == "under_a_file":
        (tmp_path / "afile").write_text("x")
        cache = tmp_path / "afile" / "cache"
    elif where == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        cache = tmp_path / "ro"
        cache.mkdir(mode=0o555)
    else:
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc")
        cache = Path("/proc/nope")
    monkeypatch.setenv("BRAINUAD_CACHE_DIR", str(cache))
    run = tmp_path / "run"
    capsys.readouterr()
    assert _tiny_train(prep, run) == 1
    err = capsys.readouterr().err
    assert "cannot write the training cache" in err and "BRAINUAD_CACHE_DIR" in err and "Traceback" not in err
    assert not run.exists()  # refused before the run folder is made


def test_export_into_the_empty_current_folder(outputs, tmp_path, monkeypatch, capsys):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["export", str(outputs["run"]), "."]) == 0, capsys.readouterr().err
    assert {"model.safetensors", "config.json", "calibration.json", "MODEL_CARD.md"} <= {
        p.name for p in here.iterdir()
    }
    assert Path.cwd() == here and not [p for p in here.iterdir() if p.is_dir()]  # filled in place, no staging left
    assert main(["export", str(outputs["run"]), "."]) == 1  # not empty now
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("config.json", [1, 2], "config.json: not a model config"),
        ("config.json", {"model": "ae"}, "config.json: 'model' must be a JSON object"),
        ("calibration.json", {"threshold": 0.1, "notes": 5}, "calibration.json: 'notes' must be a list"),
        ("calibration.json", {"threshold": 0.1, "healthy_cases": "a"}, "'healthy_cases' must be a list"),
        ("calibration.json", {"threshold": 0.1, "residual_spread": 3}, "names 3"),
    ],
)
def test_export_of_a_malformed_run_names_the_file(outputs, tmp_path, capsys, name, content, said):
    run = Path(shutil.copytree(outputs["run"], tmp_path / "run"))
    (run / "MODEL_CARD.md").unlink(missing_ok=True)
    (run / name).write_text(json.dumps(content))
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_sidecars_name_an_older_absolute_run_folder_relatively(tmp_path):
    from brainuad.bids.participant import _model_name

    out = tmp_path / "ds" / "derivatives" / "brainuad"
    findings = out / ".findings" / "sub-01"
    name = _model_name({"run_dir": str(tmp_path / "runs" / "ae")}, findings, out)
    assert not Path(name).is_absolute() and (out / name).resolve() == (tmp_path / "runs" / "ae").resolve()
    assert _model_name({"name": "builtin:t1@1+abc"}, findings, out) == "builtin:t1@1+abc"
