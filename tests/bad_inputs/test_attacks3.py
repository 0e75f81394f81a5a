"""The third attack round (issue 27): scans without orientation, memory bombs, evaluation folders on a full disk.

Each test builds its attack in tmp_path from the shared world and records its outcome in the printed corpus table."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bad_inputs.corpus import OUTCOMES
from brainuad.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _thousand_cubed(path: Path) -> Path:
    """A 1000³ uint8 volume in a few kB of .nii.gz (3.7 GiB as float32: under load_volume's own 4 GiB cap)."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.uint8)
    header.set_sform(np.eye(4), code=1)
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 100_000)
    return path


def test_a_1000_cubed_volume_is_refused_from_its_header(world, tmp_path, capsys, monkeypatch):
    import brainuad.preprocess.qc

    bomb = _thousand_cubed(tmp_path / "bomb.nii.gz")
    monkeypatch.setattr(brainuad.preprocess.qc, "available_memory", lambda: 6 * 1024**3)  # the attacker's machine
    for verb, args in (
        ("preprocess", ["preprocess", str(bomb), "--out", str(tmp_path / "p")]),
        ("detect", ["detect", str(bomb), "--model", str(world["run"]), "--out", str(tmp_path / "d")]),
    ):
        assert main([*args, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert str(bomb) in err and "GiB of memory" in err, err
        OUTCOMES[("1000_cubed_in_4MB_gzip", verb)] = "clear error"


def test_available_memory_honours_the_address_space_limit(monkeypatch):
    import resource

    from brainuad.preprocess.qc import available_memory

    real = resource.getrlimit
    limit = 6 * 1024**3
    monkeypatch.setattr(
        resource, "getrlimit", lambda which: (limit, limit) if which == resource.RLIMIT_AS else real(which)
    )
    assert available_memory() < limit
    OUTCOMES[("ulimit_v_6GiB", "memory check")] = "honoured"


def test_no_orientation_is_refused_and_a_stated_one_keeps_the_codes(world, tmp_path, capsys):
    image = nib.load(str(world["good"]))
    data = np.asarray(image.dataobj, np.float32)
    bare = nib.Nifti1Image(data, image.affine)
    bare.set_sform(image.affine, code=0)
    bare.set_qform(image.affine, code=0)
    scan = tmp_path / "bare.nii.gz"
    nib.save(bare, str(scan))
    out = tmp_path / "out"
    args = ["detect", str(scan), "--model", str(world["run"]), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert str(scan) in err and "no orientation" in err and "--assume-orientation" in err
    assert not out.exists()
    # Stated: it runs, and the outputs claim no orientation the input did not have.
    axcodes = "".join(nib.aff2axcodes(image.affine))
    assert main([*args, "--assume-orientation", axcodes]) == 0
    written = nib.load(str(out / "bare" / "anomaly_map.nii.gz")).header
    assert int(written["qform_code"]) == 0 and int(written["sform_code"]) == 0
    summary = json.loads((out / "bare" / "summary.json").read_text())
    assert summary["settings"]["assumed_orientation"] == axcodes
    OUTCOMES[("no_orientation_stated", "detect")] = "works, codes kept 0"


def test_evaluate_on_a_full_disk_leaves_the_earlier_folder_whole(world, tmp_path, capsys, monkeypatch):
    case = Path(world["cases"]["huge_outliers"][0]).parent
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(case), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--quiet"]) == 0
    before = {p.name: _digest(p) for p in out.iterdir() if p.is_file()}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)  # after summary.json, per_case.csv and table.md are written
    assert main([*args, "--quiet"]) == 1
    assert "disk full" in capsys.readouterr().err
    assert {p.name: _digest(p) for p in out.iterdir() if p.is_file()} == before  # the first run's folder, whole
    assert not list(tmp_path.glob(".*partial*"))
    OUTCOMES[("evaluate_full_disk", "evaluate")] = "earlier folder kept"


def test_a_case_named_like_a_formula_is_inert_in_the_csv(world, tmp_path):
    import csv
    import shutil

    from brainuad.io.files import csv_safe

    assert csv_safe({"a": "=1+1", "b": "-x", "c": -0.5, "d": "ok"}) == {"a": "'=1+1", "b": "'-x", "c": -0.5, "d": "ok"}
    source = Path(world["cases"]["huge_outliers"][0]).parent
    case = tmp_path / "cases" / '=HYPERLINK("http://x")'
    shutil.copytree(source, case)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(case), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--quiet"]) == 0
    for name in ("per_case.csv", "per_lesion.csv"):
        if (out / name).is_file():
            with open(out / name, newline="") as handle:
                cells = [cell for row in csv.reader(handle) for cell in row]
            assert not any(cell.startswith(("=", "+", "@")) for cell in cells), name
    OUTCOMES[("case_named_=HYPERLINK", "evaluate")] = "inert in CSV"


def test_skull_left_in_is_named_not_the_orientation(shared_data, tmp_path, capsys):
    head = shared_data / "stroke" / "T2_head.nii.gz"
    args = ["preprocess", str(head), "--out", str(tmp_path / "p"), "--preset", "paper-2mm", "--skull-strip", "none"]
    code = main([*args, "--quiet"])
    err = capsys.readouterr().err
    if code == 0:  # registration happened to pass its check: nothing to blame
        return
    assert "skull" in err and "orientation" not in err, err
    OUTCOMES[("skull_left_in", "preprocess")] = "names the skull"


def test_a_huge_config_with_unreadable_weights_is_refused_before_building(tmp_path):
    import shutil

    from brainuad.errors import InputError
    from brainuad.infer.trained import TrainedModel
    from brainuad.io.shipped import resolve_model_dir

    run = Path(shutil.copytree(resolve_model_dir("builtin:t2"), tmp_path / "run"))
    config = json.loads((run / "config.json").read_text())
    config["model"]["channels"] = [65536, 65536, 65536]  # terabytes of parameters
    (run / "config.json").write_text(json.dumps(config))
    (run / "model.safetensors").write_bytes(b"\xff" * 64)  # a header that cannot be read
    with pytest.raises(InputError, match="GiB of parameters"):
        TrainedModel.load(run, "cpu")
    OUTCOMES[("huge_config_unreadable_weights", "load")] = "refused before building"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_a_training_run_folder_is_readable_as_the_umask_says(tmp_path, umask):
    """Weights were written 0600 (safetensors renames its own temporary file onto ours): every file of a run folder,
    weights included, gets the mode ``open`` would give (0644 under umask 022, 0664 under 002)."""
    import os
    import stat

    from brainuad.train.loop import train
    from tiny import tiny_config, write_cases

    data = write_cases(tmp_path / "data", 3)
    previous = os.umask(umask)
    try:
        train([data], tmp_path / "run", tiny_config(epochs=1), progress=False)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert "model.safetensors" in modes and "last_optimizer.safetensors" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    OUTCOMES[(f"weights_under_umask_{umask:03o}", "train")] = f"{0o666 & ~umask:o}"


def test_a_refused_detect_leaves_nothing_it_created_and_keeps_the_users_folder(world, tmp_path, capsys):
    """A refused detect left an empty ``--out`` folder: now the folders it created go, a folder the user had stays."""
    scan = world["cases"]["nan_voxels"][0]
    args = ["detect", str(scan), "--model", str(world["run"]), "--device", "cpu", "--quiet", "--out"]
    assert main([*args, str(tmp_path / "new" / "findings")]) == 1
    printed = capsys.readouterr()
    assert str(scan) in printed.err
    assert not (tmp_path / "new").exists()  # neither --out nor the parent it had to create
    assert "nothing written" in printed.out and "-> " not in printed.out  # no pointer to the removed folder
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main([*args, str(mine)]) == 1
    assert mine.is_dir() and not list(mine.iterdir())
    OUTCOMES[("refused_detect_new_out", "detect")] = "nothing left"


def test_the_colour_bar_extends_above_the_threshold_and_marks_it(tmp_path, monkeypatch):
    """The colour scale stopped below the threshold (the map's 99.5th percentile), so every segmented voxel was the
    same saturated colour: it now reaches above the threshold, and the threshold is drawn on the bar."""
    from brainuad.report import figures

    rng = np.random.default_rng(0)
    anomaly = rng.gamma(2.0, 0.02, (32, 32, 16)).astype(np.float32)
    anomaly[10:14, 10:14, 6:10] += rng.uniform(0.3, 0.9, (4, 4, 4))  # a lesion: 0.4 % of the voxels
    threshold = 0.25
    assert np.percentile(anomaly[anomaly > 0], 99.5) < threshold  # the case that saturated
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig))
    image = np.full(anomaly.shape, 0.5, np.float32)
    figures.plot_detection_rows(
        image, image, anomaly, anomaly > threshold, [8], tmp_path / "f.png", threshold=threshold
    )
    heat = drawn["fig"].axes[2].images[-1]
    assert heat.norm.vmax > threshold
    segmented = anomaly[anomaly > threshold]
    assert np.mean(heat.norm(segmented) < 1.0) > 0.9  # not all one saturated colour
    bar = drawn["fig"].axes[-1]
    assert any(np.allclose(line.get_ydata(), threshold) for line in bar.lines)
    OUTCOMES[("colour_bar_vs_threshold", "detect")] = "reaches above, marked"


def test_a_section_holding_a_key_of_its_own_name_is_named_once():
    """The report's summary table said ``preprocessing › preprocessing › preset`` (detect's ``preprocessing``
    section holds the case's ``preprocessing`` settings)."""
    from brainuad.report.html import summary_rows

    summary = {"preprocessing": {"preprocessing": {"preset": "paper-2mm"}, "qc": {"brain_ml": 1200.0}}, "a": 1}
    assert summary_rows(summary) == [
        ("preprocessing › preset", "paper-2mm"),
        ("preprocessing › qc › brain ml", "1200"),
        ("a", "1"),
    ]
    OUTCOMES[("summary_key_repeated", "detect")] = "named once"


def test_a_symlinked_case_folder_is_evaluated_once(world, tmp_path):
    """A case folder linked into the cases folder was not found (``rglob`` does not enter symlinked folders); a link
    back up must not loop, and two links to one case must not count it twice."""
    source = Path(world["cases"]["huge_outliers"][0]).parent
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "linked_case").symlink_to(source, target_is_directory=True)
    (cases / "same_case_again").symlink_to(source, target_is_directory=True)
    (cases / "loop").symlink_to(cases, target_is_directory=True)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(cases), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 1 and summary["reported_cases"] == ["huge_outliers"]
    OUTCOMES[("symlinked_case_folder", "evaluate")] = "found once"


def test_every_shipped_model_has_a_contrast_reference():
    """builtin:t1's calibration had no contrast reference, so nothing checked the contrast of scans given to it."""
    from brainuad.infer.calibration import read_calibration

    assert read_calibration("builtin:t1").csf_to_white_matter < 1 < read_calibration("builtin:t2").csf_to_white_matter


@pytest.mark.real
@pytest.mark.slow
def test_a_real_t2_scan_given_to_builtin_t1_is_refused(shared_data, tmp_path, capsys):
    """A T2 scan given to builtin:t1 passed silently (score 0.817, 62 mL of findings): now refused, naming the file
    and the flag that runs it anyway."""
    scan = shared_data / "healthy" / "IXI002-Guys-0828-T2_brain.nii.gz"
    out = tmp_path / "out"
    args = ["detect", str(scan), "--model", "builtin:t1", "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert str(scan) in err and "T2-like" in err and "--allow-contrast-mismatch" in err, err
    assert not out.exists()
    OUTCOMES[("t2_scan_to_builtin_t1", "detect")] = "refused"
