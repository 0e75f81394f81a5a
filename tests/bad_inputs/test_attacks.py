"""The second attack round (issue 13): misuses that lost data, gave silent wrong results, tracebacks or held resources.

Each test builds its attack in tmp_path from the shared world (a valid scan, its preprocessed case and a calibrated
intensity-baseline model) and records its outcome in the printed corpus table."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bad_inputs.corpus import OUTCOMES
from brainuad.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scan(world) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(world["good"]))
    return np.asarray(image.dataobj, np.float32), image.affine


def _copy_run(world, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(world["run"], tmp_path / name))


def _detect(inputs, run, out, *extra) -> int:
    return main(
        ["detect", *map(str, inputs), "--model", str(run), "--out", str(out), "--device", "cpu", "--quiet", *extra]
    )


@pytest.fixture(scope="module")
def tiny_ae(world, tmp_path_factory):
    """A tiny trained autoencoder (real weights to corrupt), one epoch on the world's case."""
    run = tmp_path_factory.mktemp("ae") / "run"
    args = ["train", "--data", str(world["prep"]), "--out", str(run), "--method", "ae", "--latent", "4"]
    args += ["--channels", "2", "2", "2", "2", "--stem-channels", "2", "--epochs", "1", "--batch-size", "1"]
    assert main([*args, "--augment", "off", "--device", "cpu", "--quiet"]) == 0
    return run


# --- data loss ---------------------------------------------------------------------------------------------------


def _user_folder(tmp_path: Path, world) -> tuple[Path, dict[Path, str]]:
    """Scans in a folder where the user keeps their own folder ``p1/`` beside ``p1.nii.gz``."""
    scans = tmp_path / "scans"
    (scans / "p1").mkdir(parents=True)
    shutil.copy(world["good"], scans / "p1.nii.gz")
    data, affine = _scan(world)
    nib.save(nib.Nifti1Image((data > 100).astype(np.uint8), affine), str(scans / "p1" / "my_manual_lesion_mask.nii.gz"))
    (scans / "p1" / "notes.txt").write_text("my notes")
    return scans, {p: _digest(p) for p in (scans / "p1").iterdir()}


@pytest.mark.parametrize("verb", ["preprocess", "detect"])
def test_out_is_the_input_folder_with_a_user_folder(world, tmp_path, capsys, verb):
    scans, before = _user_folder(tmp_path, world)
    if verb == "preprocess":
        code = main(["preprocess", str(scans), "--out", str(scans), "--preset", "paper-2mm", "--quiet"])
    else:
        code = _detect([scans], world["run"], scans)
    err = capsys.readouterr().err
    assert code == 1
    assert f"{scans / 'p1'}: already exists and was not written by brainuad" in err
    assert {p: _digest(p) for p in (scans / "p1").iterdir()} == before  # the user's files, untouched
    OUTCOMES[("user_folder_as_output", verb)] = "refused"


def test_evaluate_out_is_the_run_folder(world, tmp_path, capsys):
    run = _copy_run(world, tmp_path)
    before = _digest(run / "summary.json")
    case = world["cases"]["huge_outliers"][0].parent
    args = ["evaluate", "--model", str(run), "--cases", str(case), "--out", str(run), "--device", "cpu", "--quiet"]
    assert main(args) == 1
    assert "run folder" in capsys.readouterr().err
    assert _digest(run / "summary.json") == before
    OUTCOMES[("evaluate_out_is_run_folder", "evaluate")] = "refused"


def test_concurrent_train_into_one_folder_is_locked(world, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".train.lock", "a+") as other:  # another train process holds the run folder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = main(["train", "--data", str(world["prep"]), "--out", str(run), "--method", "intensity", "--quiet"])
    assert code == 1
    assert "another 'brainuad train' is using this run folder" in capsys.readouterr().err
    assert not (run / "config.json").exists() and not (run / "log.csv").exists()
    OUTCOMES[("concurrent_train", "train")] = "locked"


def test_train_on_a_full_disk_is_an_error_and_resumable(world, tmp_path, capsys, monkeypatch, brainuad_cache_dir):
    run = tmp_path / "run"
    caches_before = set(brainuad_cache_dir.rglob("*.npy"))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1024**2))
    args = ["train", "--data", str(world["prep"]), "--out", str(run), "--method", "intensity", "--quiet"]
    assert main(args) == 1
    assert "not enough disk space for the training cache" in capsys.readouterr().err
    # The training cache lives in BRAINUAD_CACHE_DIR (never in the run): no cache, whole or partial, was written.
    assert (run / "config.json").is_file() and not (run / "cache").exists()
    assert set(brainuad_cache_dir.rglob("*.npy")) == caches_before
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    OUTCOMES[("disk_full_cache", "train")] = "clear error"


# --- silent wrong results --------------------------------------------------------------------------------------------


def test_tuning_on_a_renamed_copy_of_a_reported_case(world, tmp_path, capsys):
    image, label = world["cases"]["huge_outliers"]
    copy = tmp_path / "tune" / "renamed"
    copy.mkdir(parents=True)
    shutil.copy(image, copy / "renamed_t2.nii.gz")
    shutil.copy(label, copy / "renamed_seg.nii.gz")
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(image.parent), "--out", str(tmp_path / "e")]
    assert main([*args, "--tune-cases", str(copy.parent), "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "used to choose the threshold" in err and str(image) in err
    OUTCOMES[("tune_on_copy_of_reported", "evaluate")] = "refused"


def test_reporting_a_tuning_case_of_the_calibration(world, tmp_path, capsys):
    image, label = world["cases"]["huge_outliers"]
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(image, copy / "x_t2.nii.gz")
    shutil.copy(label, copy / "x_seg.nii.gz")
    run = _copy_run(world, tmp_path)
    calibration = json.loads((run / "calibration.json").read_text())
    # What 'calibrate --labelled' records: the tuning images, by path and by content.
    calibration.update(tuning_cases=[str(image)], tuning_cases_sha256=[_digest(image)])
    (run / "calibration.json").write_text(json.dumps(calibration))
    for cases in (image.parent, copy):  # the tuning case itself, and a renamed copy of it
        args = ["evaluate", "--model", str(run), "--cases", str(cases), "--out", str(tmp_path / "e"), "--quiet"]
        assert main([*args, "--device", "cpu"]) == 1
        assert "calibration.json tuning case" in capsys.readouterr().err
    OUTCOMES[("report_calibration_tuning", "evaluate")] = "refused"


def test_case_folder_without_the_modality(world, tmp_path, capsys):
    image, label = world["cases"]["huge_outliers"]
    cases = tmp_path / "cases"
    shutil.copytree(image.parent, cases / "good")
    (cases / "t1only").mkdir()
    shutil.copy(image, cases / "t1only" / "t1only_t1.nii.gz")
    shutil.copy(label, cases / "t1only" / "t1only_seg.nii.gz")
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(cases), "--out", str(tmp_path / "e"), "--quiet"]
    assert main([*args, "--device", "cpu"]) == 1
    assert f"{cases / 't1only'}: case t1only has no t2 image" in capsys.readouterr().err
    OUTCOMES[("case_missing_modality", "evaluate")] = "clear error"


def test_a_detect_folder_attacked(world, tmp_path, capsys):
    """One folder of scans, attacked together (detect runs are the costly part):

    - a brain mask and an RGB24 file beside the scans: each reported by name, no traceback, the batch goes on;
    - a child-size brain (the valid scan at 0.7× per axis): analysed, with QC warnings in summary.json;
    - its header holds a patient name, an extension, cal_min/max and an intent code: outputs carry geometry only;
    - ``--out`` inside the input folder: a re-run does not analyse its own outputs as scans;
    - a re-run with another ``--threshold``, and after the input changed: recomputed, not "already finished".
    """
    scans = tmp_path / "scans"
    scans.mkdir()
    data, affine = _scan(world)
    nib.save(nib.Nifti1Image((data > 0).astype(np.uint8), affine), str(scans / "brain_mask.nii.gz"))
    rgb = np.zeros(data.shape, [("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, affine), str(scans / "colour.nii.gz"))
    child = affine.copy()
    child[:3, :3] *= 0.7  # 0.34× the volume
    image = nib.Nifti1Image(data, child)
    image.header["descrip"] = b"PatientName=DOE^JOHN"
    image.header["cal_min"], image.header["cal_max"], image.header["intent_code"] = 0, 730, 1002
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientID=12345"))
    nib.save(image, str(scans / "scan.nii.gz"))
    out = scans / "findings"
    # calibrate records the healthy scans' contrast (here T1-like: CSF darker than white matter); a model calibrated on
    # T2 scans records CSF/WM > 1 — given this T1-like scan, detect must warn.
    model = _copy_run(world, tmp_path)
    calibration = json.loads((model / "calibration.json").read_text())
    assert 0 < calibration["csf_to_white_matter"] < 1
    (model / "calibration.json").write_text(json.dumps({**calibration, "csf_to_white_matter": 1.8}))

    def run(*extra) -> tuple[str, str]:
        # the mask and the RGB file fail every time; the strong contrast mismatch is accepted here (refused below)
        assert _detect([scans], model, out, "--allow-contrast-mismatch", *extra) == 1
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return captured.out, captured.err

    assert _detect([scans / "scan.nii.gz"], model, tmp_path / "refused") == 1  # without the flag: refused (issue 27)
    assert "--allow-contrast-mismatch" in capsys.readouterr().err
    OUTCOMES[("t1_scan_to_t2_model", "detect")] = "refused (flag runs it)"
    stdout, err = run()
    assert "1 done, 0 already finished, 2 failed" in stdout
    summary = json.loads((out / "scan" / "summary.json").read_text())  # each finished scan gets its result line
    assert f"  scan: scan score {summary['scan_score']:.3f}" in stdout and str(out / "scan" / "report.html") in stdout
    assert f"{scans / 'brain_mask.nii.gz'}: holds only the values 0, 1: a mask or label map" in err
    assert f"{scans / 'colour.nii.gz'}: voxels of type" in err
    OUTCOMES[("brain_mask_in_batch", "detect")] = OUTCOMES[("rgb24_in_batch", "detect")] = "others done"
    summary = json.loads((out / "scan" / "summary.json").read_text())
    warnings = summary["preprocessing"]["warnings"]
    assert any("QC: brain volume" in w for w in warnings) and any("QC: registration overlap" in w for w in warnings)
    OUTCOMES[("child_size_brain", "detect")] = "QC warning"
    assert any("QC: the scan's contrast looks T1/FLAIR-like" in w for w in warnings), warnings
    header = nib.load(str(out / "scan" / "anomaly_map.nii.gz")).header
    assert header["descrip"].item() == b"" and not header.extensions
    assert (header["cal_min"], header["cal_max"], header["intent_code"]) == (0, 0, 0)
    OUTCOMES[("header_free_text_copied", "detect")] = "geometry only"
    assert "0 done, 1 already finished, 2 failed" in run()[0]  # scans/findings/* are not scans
    OUTCOMES[("out_inside_input", "detect")] = "not rescanned"
    assert "1 done, 0 already finished" in run("--threshold", "0.5")[0]
    assert json.loads((out / "scan" / "summary.json").read_text())["threshold"] == 0.5
    nib.save(nib.Nifti1Image(data * 1.5, child), str(scans / "scan.nii.gz"))
    assert "1 done, 0 already finished" in run("--threshold", "0.5")[0]
    assert json.loads((out / "scan" / "summary.json").read_text())["input"]["sha256"] == _digest(scans / "scan.nii.gz")
    OUTCOMES[("rerun_changed_settings", "detect")] = "recomputed"


def test_case_names_never_collide(tmp_path):
    from brainuad.preprocess.pipeline import case_names

    paths = [tmp_path / n for n in ("a b.nii.gz", "a_b.nii.gz", "c.nii", "c.nii.gz")]
    names = case_names(paths)
    assert len(set(names.values())) == 4 and case_names(paths) == names  # distinct and stable
    OUTCOMES[("name_collisions", "preprocess")] = OUTCOMES[("name_collisions", "detect")] = "distinct"


def test_nan_thresholds(world, tmp_path, capsys):
    assert _detect([world["good"]], world["run"], tmp_path / "o", "--threshold", "nan") == 2
    assert "finite" in capsys.readouterr().err
    run = _copy_run(world, tmp_path)
    calibration = json.loads((run / "calibration.json").read_text())
    for bad in ({**calibration, "threshold": float("nan")}, {k: v for k, v in calibration.items() if k != "threshold"}):
        (run / "calibration.json").write_text(json.dumps(bad))
        assert _detect([world["good"]], run, tmp_path / "o") == 1
        assert f"{run / 'calibration.json'}: 'threshold' must be a finite number" in capsys.readouterr().err
    (run / "calibration.json").write_text("[1, 2]")
    assert _detect([world["good"]], run, tmp_path / "o") == 1
    assert "not a calibration (expected a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "o" / "sub-01_T2w").exists()
    OUTCOMES[("nan_threshold", "detect")] = "clear error"
    OUTCOMES[("calibration_no_threshold", "detect")] = "clear error"


def test_broken_weights(world, tiny_ae, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    for kind, change in (("nan_weights", lambda t: t * float("nan")), ("integer_weights", lambda t: t.to(int))):
        run = Path(shutil.copytree(tiny_ae, tmp_path / kind))
        state = load_file(str(run / "model.safetensors"))
        save_file({k: change(v) if v.is_floating_point() else v for k, v in state.items()}, run / "model.safetensors")
        assert _detect([world["good"]], run, tmp_path / "o") == 1
        err = capsys.readouterr().err
        assert str(run / "model.safetensors") in err and ("NaN" in err or "stored as torch.int64" in err)
        OUTCOMES[(kind, "detect")] = "clear error"
    # A config declaring a huge network is refused from the weights' header, before building it.
    run = Path(shutil.copytree(tiny_ae, tmp_path / "giant"))
    config = json.loads((run / "config.json").read_text())
    config["model"]["latent"] = 1_000_000
    (run / "config.json").write_text(json.dumps(config))
    assert _detect([world["good"]], run, tmp_path / "o") == 1
    assert "refusing to build it" in capsys.readouterr().err
    OUTCOMES[("config_declares_giant_net", "detect")] = "clear error"


def test_diverging_training_stops(world, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(world["prep"]), "--out", str(run), "--method", "ae", "--latent", "4", "--lr", "1e12"]
    args += ["--channels", "2", "2", "2", "2", "--stem-channels", "2", "--epochs", "3", "--batch-size", "1"]
    assert main([*args, "--steps-per-epoch", "2", "--augment", "off", "--device", "cpu", "--quiet"]) == 1
    assert "training diverged at epoch" in capsys.readouterr().err
    assert not (run / "summary.json").exists()
    OUTCOMES[("diverging_loss", "train")] = "clear error"


def test_resume_with_different_flags(world, tiny_ae, tmp_path, capsys):
    run = Path(shutil.copytree(tiny_ae, tmp_path / "run"))
    base = ["train", "--data", str(world["prep"]), "--out", str(run), "--resume", "--device", "cpu", "--quiet"]
    assert main([*base, "--lr", "0.001", "--latent", "8"]) == 1
    err = capsys.readouterr().err
    assert "model.latent: run 4, given 8" in err and "training.lr: run 0.0001, given 0.001" in err
    assert main([*base, "--epochs", "2"]) == 0, capsys.readouterr().err  # the epoch budget may change
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 2
    OUTCOMES[("resume_other_flags", "train")] = "refused"


def test_qform_and_sform_disagree(world, tmp_path, capsys):
    data, affine = _scan(world)
    image = nib.Nifti1Image(data, affine)
    rotated = affine.copy()
    rotated[:3, :3] = affine[:3, :3] @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    image.set_qform(rotated, code=1)
    image.set_sform(affine, code=1)
    path = tmp_path / "two_orientations.nii.gz"
    nib.save(image, str(path))
    assert main(["preprocess", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert f"{path}: qform and sform disagree" in capsys.readouterr().err
    OUTCOMES[("qform_sform_disagree", "preprocess")] = "clear error"


def test_intensity_offset_and_huge_values(world, tmp_path, capsys):
    data, affine = _scan(world)
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(data - 1000.0, affine), str(shifted))
    # A uniform ball of brain size (with noise), not a brain: refused (issue 27; it was preprocessed with a warning).
    centre = (np.asarray(data.shape) - 1) / 2
    radius_mm = np.sqrt(sum((axis - c) ** 2 for axis, c in zip(np.indices(data.shape), centre))) * 2.0
    ball = np.where(radius_mm < 60, np.random.default_rng(0).normal(500, 5, data.shape), 0).astype(np.float32)
    nib.save(nib.Nifti1Image(ball, affine), str(tmp_path / "ball.nii.gz"))
    args = ["preprocess", str(shifted), str(tmp_path / "ball.nii.gz"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--preset", "paper-2mm"]) == 1
    assert f"{tmp_path / 'ball.nii.gz'}: this is not a brain" in capsys.readouterr().err
    assert not (tmp_path / "o" / "ball").exists()
    assert not json.loads((tmp_path / "o" / "shifted" / "record.json").read_text())["warnings"]
    OUTCOMES[("uniform_ball_not_a_brain", "preprocess")] = "refused: not a brain"
    original = nib.load(str(world["prep"] / "sub-01_T2w" / "image.nii.gz")).get_fdata()
    offset = nib.load(str(tmp_path / "o" / "shifted" / "image.nii.gz")).get_fdata()
    assert np.percentile(np.abs(original - offset), 99) < 0.01  # was 0.49: a different brain mask and scaling
    OUTCOMES[("intensity_offset_-1000", "preprocess")] = "same image"
    huge = tmp_path / "huge.nii.gz"
    values = data.astype(np.float64)
    values[tuple(s // 2 for s in data.shape)] = 7e302
    nib.save(nib.Nifti1Image(values, affine), str(huge))
    assert main(["preprocess", str(huge), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{huge}: values up to 7e+302 exceed the float32 range" in err and "NaN" not in err
    OUTCOMES[("finite_beyond_float32", "preprocess")] = "clear error"


# --- tracebacks → messages -------------------------------------------------------------------------------------------


def test_calibrating_on_another_grid(world, tmp_path, capsys):
    run = _copy_run(world, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"]["input_shape"] = [160, 192, 96]  # a 1 mm model; the healthy cases are at 2 mm
    (run / "config.json").write_text(json.dumps(config))
    assert main(["calibrate", "--model", str(run), "--healthy", str(world["prep"]), "--device", "cpu"]) == 1
    assert "does not match the model's (160, 192, 96)" in capsys.readouterr().err
    OUTCOMES[("calibrate_other_grid", "calibrate")] = "clear error"


def test_resume_from_another_working_directory(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(world["prep"].parent)
    run = tmp_path / "run"
    assert main(["train", "--data", "prep", "--out", str(run), "--method", "intensity", "--quiet"]) == 0
    assert not Path(json.loads((run / "split.json").read_text())["train"][0]).is_absolute()  # relative to the run
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", str(world["prep"]), "--out", str(run), "--resume", "--quiet"]) == 0
    # An older run folder stored paths relative to where it was started: elsewhere, a clear error.
    split = json.loads((run / "split.json").read_text())
    split["train"] = split["val"] = ["prep/sub-01_T2w"]
    del split["paths"]  # as an older brainuad wrote it
    (run / "split.json").write_text(json.dumps(split))
    assert main(["train", "--data", str(world["prep"]), "--out", str(run), "--resume", "--quiet"]) == 1
    assert "resume from there" in capsys.readouterr().err
    OUTCOMES[("resume_other_cwd", "train")] = "works"


def test_world_size_without_torchrun(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert main(["train", "--data", str(world["prep"]), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "torchrun" in capsys.readouterr().err
    OUTCOMES[("world_size_no_torchrun", "train")] = "clear error"


# --- resources -------------------------------------------------------------------------------------------------------


def test_memory_estimate_before_loading(world, tmp_path, capsys, monkeypatch):
    import brainuad.preprocess.qc

    monkeypatch.setattr(brainuad.preprocess.qc, "available_memory", lambda: 1024**2)
    assert main(["preprocess", str(world["good"]), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "GiB of memory" in capsys.readouterr().err
    OUTCOMES[("memory_estimate", "preprocess")] = "clear error"


SLOW_WORKERS = """
import sys, time
from pathlib import Path
import brainuad.preprocess.pipeline
from brainuad.io.volumes import atomic_folder

def slow_case(path, out_dir, config=None, name=None, force=False, orientation=None):
    # A worker in the middle of writing its case folder, for as long as it takes to be stopped.
    with atomic_folder(Path(out_dir) / name) as staging:
        (staging / "image.nii.gz").write_bytes(b"half")
        time.sleep(600)

brainuad.preprocess.pipeline.preprocess_file = slow_case  # the forked workers inherit it
from brainuad.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_stops_preprocess_workers_and_cleans_up(world, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(world["good"], scans / f"{name}.nii.gz")
    out = tmp_path / "out"
    args = [sys.executable, "-c", SLOW_WORKERS, "preprocess", str(scans), "--out", str(out), "--jobs", "2", "--quiet"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob(".*.partial-*"))) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # until both workers are building a case folder
    children = [int(p) for p in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
    assert len(children) == 2 and len(list(out.glob(".*.partial-*"))) == 2
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)  # returns: no worker holds the pipe open any more
    assert process.returncode == 130 and b"interrupted" in err
    time.sleep(0.5)
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not out.exists()  # no staging folder, no case folder, not the --out folder it created
    OUTCOMES[("sigterm_with_workers", "preprocess")] = "cleaned up"


NO_SOCKETS = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("socket creation blocked by the no_network test")

class NoSocket(socket.socket):  # a class, so that modules subclassing socket.socket (ssl) still import
    def __init__(self, *args, **kwargs):
        refuse()

socket.socket = NoSocket  # blocks creating any socket, not only connecting
socket.socketpair = socket.create_connection = socket.fromfd = refuse
from brainuad.cli import main
# the demo runs under a socket block in tests/test_readme.py; its imports here
import brainuad.demo, brainuad.data.synthetic

codes = {}
for verb, args in json.loads(sys.argv[1]):
    codes[verb] = main(args)
print(json.dumps(codes))
"""


def test_no_network(world, tmp_path):
    """Every verb runs with socket creation blocked (the demo's run is blocked in tests/test_readme.py, its imports
    here); download fails with a clear message."""
    import subprocess
    import sys

    label = world["cases"]["huge_outliers"][1]
    # Evaluate's case (the valid scan) comes already preprocessed in its cache; detect preprocesses from scratch.
    shutil.copytree(world["prep"] / "sub-01_T2w", tmp_path / "cache" / "cases" / "x")
    case = tmp_path / "cases" / "x"
    case.mkdir(parents=True)
    shutil.copy(world["good"], case / "x_t2.nii.gz")
    shutil.copy(label, case / "x_seg.nii.gz")
    shutil.copytree(world["prep"], tmp_path / "prep")
    shutil.copytree(world["prep"] / "sub-01_T2w", tmp_path / "abl" / "cache" / "cases" / "x")
    run, quiet = str(tmp_path / "run"), "--quiet"
    # The smallest ablation: one dense and one spatial variant of a 2-channel network, one epoch each.
    tiny = ["--latents", "2", "--spatial-variants", "1", "--channels", "2", "2", "--stem-channels", "2"]
    tiny += ["--epochs", "1", "--batch-size", "1", "--augment", "off", "--device", "cpu"]
    verbs = [
        ("preprocess", ["preprocess", str(world["good"]), "--out", str(tmp_path / "prep"), "--preset", "paper-2mm"]),
        ("train", ["train", "--data", str(tmp_path / "prep"), "--out", run, "--method", "intensity", quiet]),
        ("calibrate", ["calibrate", "--model", run, "--healthy", str(tmp_path / "prep"), "--device", "cpu"]),
        ("detect", ["detect", str(world["good"]), "--model", run, "--out", str(tmp_path / "d"), "--device", "cpu"]),
        ("evaluate", ["evaluate", "--model", run, "--cases", str(case.parent), "--out", str(tmp_path / "e")]),
        ("download", ["download", "ixi", "--out", str(tmp_path / "ixi"), quiet]),
        ("models", ["models"]),
        ("ablate", ["ablate", "--data", str(tmp_path / "prep"), "--cases", str(case.parent), *tiny]),
    ]
    verbs = [(v, [*a, quiet] if quiet not in a and v not in ("calibrate", "models") else a) for v, a in verbs]
    verbs[4][1].extend(["--cache", str(tmp_path / "cache"), "--device", "cpu"])
    verbs[7][1].extend(["--out", str(tmp_path / "abl")])
    result = subprocess.run(
        [sys.executable, "-c", NO_SOCKETS, json.dumps(verbs)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"preprocess": 0, "train": 0, "calibrate": 0, "detect": 0, "evaluate": 0, "download": 1, "models": 0}
    assert codes == {**expected, "ablate": 0}, result.stderr
    assert (tmp_path / "abl" / "table.md").is_file() and (tmp_path / "abl" / "figure4_roc.png").is_file()
    assert "socket creation blocked" in result.stderr and "Traceback" not in result.stderr
    for verb in codes:
        OUTCOMES[("no_network", verb)] = "works" if verb != "download" else "clear error"


def test_sigterm_during_detect_leaves_no_partial_folder(world, tmp_path, capsys, monkeypatch):
    import os
    import signal

    import brainuad.infer.detect
    from brainuad.preprocess.pipeline import load_case

    # Preprocessing is replaced by the world's finished case of the same scan (the costly part is not under test).
    case = load_case(world["prep"] / "sub-01_T2w")
    monkeypatch.setattr(brainuad.infer.detect, "preprocess_volume", lambda volume, config, name: case)

    def terminated(*args):  # SIGTERM arrives while the findings folder is being written
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(brainuad.infer.detect, "_write_figures", terminated)
    out = tmp_path / "out"
    assert _detect([world["good"]], world["run"], out) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists()  # neither the staging folder nor a half-written case nor the --out it created
    OUTCOMES[("sigterm_while_writing", "detect")] = "cleaned up"
