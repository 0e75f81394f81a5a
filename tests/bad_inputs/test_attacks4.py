"""The fourth attack round (issue 35): errors that cross process boundaries, and calibration values no calibration can
produce. Each class is tested at its cause (every error type, every calibration key), with the attack that found it.
"""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from bad_inputs.corpus import OUTCOMES
from brainuad.cli import main


# ---- class 1: errors survive process boundaries; one bad scan fails alone ----
def _error_types():
    import brainuad.data.download  # noqa: F401  (registers DownloadError)
    from brainuad.errors import BrainuadError

    seen, stack = [], [BrainuadError]
    while stack:
        kind = stack.pop()
        seen.append(kind)
        stack.extend(kind.__subclasses__())
    return seen


@pytest.mark.parametrize("kind", _error_types(), ids=lambda k: k.__name__)
def test_every_brainuad_error_pickles_whole(kind, tmp_path):
    import inspect

    params = [p for p in inspect.signature(kind.__init__).parameters.values() if p.name != "self"]
    args = (
        (tmp_path / "scan.nii.gz", "not a scan")
        if [p.name for p in params[:2]] == ["path", "problem"]
        else ("something went wrong",)
    )
    error = kind(*args)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is kind and str(again) == str(error)
    assert getattr(again, "path", None) == getattr(error, "path", None)


def test_one_corrupt_scan_fails_alone_in_a_parallel_batch(world, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(world["good"], scans / "good.nii.gz")
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "prep"
    assert main(["preprocess", str(scans), "--out", str(out), "--preset", "paper-2mm", "--jobs", "2", "--quiet"]) == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "BrokenProcessPool" not in text and "unexpected" not in text
    assert "broken.nii.gz" in text and "1 done" in text and "1 failed" in text
    assert (out / "good" / "image.nii.gz").is_file()  # the good scan is not taken down with the bad one
    OUTCOMES[("corrupt file beside good (--jobs 2)", "preprocess")] = "fails alone"


# ---- class 2: calibration values validated against what a calibration can produce ----
def _calibrated_copy(world, tmp_path, edit):
    run = tmp_path / "model"
    shutil.copytree(world["run"], run)
    path = run / "calibration.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return run


@pytest.mark.parametrize(
    ("label", "edit", "key"),
    [
        ("threshold -1", lambda d: d.update(threshold=-1), "threshold"),
        ("threshold 0", lambda d: d.update(threshold=0), "threshold"),
        ("threshold 1e300", lambda d: d.update(threshold=1e300), "threshold"),
        ("false-positive rate 2", lambda d: d.update(false_positive_rate=2.0), "false_positive_rate"),
        ("contrast reference NaN", lambda d: d.update(csf_to_white_matter=float("nan")), "csf_to_white_matter"),
        ("contrast reference -1", lambda d: d.update(csf_to_white_matter=-1.0), "csf_to_white_matter"),
        ("spread units, spread removed", lambda d: d.update(map_units="residual / healthy spread"), "residual_spread"),
        ("unknown map units", lambda d: d.update(map_units="furlongs"), "map_units"),
        ("negative healthy volume", lambda d: d.update(healthy_flagged_ml=[-3.0]), "healthy_flagged_ml"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_calibration_values_no_calibration_produces_are_refused(world, tmp_path, capsys, label, edit, key):
    run = _calibrated_copy(world, tmp_path, edit)
    out = tmp_path / "out"
    code = main(["detect", str(world["good"]), "--model", str(run), "--out", str(out), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "calibration.json" in err and key in err and "Traceback" not in err, err
    assert not out.exists() or not any(out.rglob("segmentation.nii.gz"))  # nothing computed on it
    OUTCOMES[(f"calibration: {label}", "detect")] = "refused"


@pytest.mark.parametrize("value", ["-1", "0", "1e300"])
def test_a_threshold_flag_no_map_can_use_is_refused(world, tmp_path, capsys, value):
    out = tmp_path / "out"
    args = ["detect", str(world["good"]), "--model", str(world["run"]), "--out", str(out), "--threshold", value]
    assert main([*args, "--device", "cpu", "--quiet"]) == 2
    assert "--threshold must be" in capsys.readouterr().err and not out.exists()
    OUTCOMES[(f"--threshold {value}", "detect")] = "refused"


def test_a_calibration_writes_its_map_units(world):
    data = json.loads((world["run"] / "calibration.json").read_text())
    assert data["map_units"] == "residual" and data["csf_to_white_matter"] > 0


# ---- classes 4 and 6: filters, odd JSON and spreadsheet-made tables get clear errors before any compute ----
def _dataset(root, description='{"Name": "d", "BIDSVersion": "1.10.0"}'):
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-01_T2w.nii.gz").write_bytes(b"never read: the run stops before any scan is read")
    (root / "dataset_description.json").write_text(description)
    return root


@pytest.mark.parametrize(
    ("label", "description", "filters", "message"),
    [
        ("description is a list", "[1, 2]", None, "must be a JSON object"),
        ("filter query 'T2w'", None, {"T2w": {"run": "1"}}, "unknown query name(s) 'T2w'"),
        ("filter query 't2'", None, {"t2": {"run": "1"}}, "unknown query name(s) 't2'"),
    ],
)
def test_bids_inputs_that_would_be_misread_are_refused(tmp_path, capsys, label, description, filters, message):
    bids = _dataset(tmp_path / "ds", *([description] if description else []))
    args = ["bids", str(bids), str(tmp_path / "out"), "participant", "--model", "builtin:t2", "--quiet"]
    if filters is not None:
        (tmp_path / "filters.json").write_text(json.dumps(filters))
        args += ["--bids-filter-file", str(tmp_path / "filters.json")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "unexpected" not in err, err
    assert not (tmp_path / "out").exists()
    OUTCOMES[(f"bids: {label}", "bids")] = "refused"


def test_an_existing_output_description_that_is_a_list_is_not_a_traceback(tmp_path):
    from brainuad.bids.participant import write_dataset_description
    from brainuad.errors import OutputError

    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text("[]")
    with pytest.raises(OutputError, match="holds another dataset"):
        write_dataset_description(out, _dataset(tmp_path / "ds"))


def test_participants_tsv_saved_by_a_spreadsheet_is_read_and_one_without_ids_refused(tmp_path):
    from brainuad.bids.layout import participants_matching
    from brainuad.errors import InputError

    bids = _dataset(tmp_path / "ds")
    (bids / "participants.tsv").write_bytes(
        "\ufeffparticipant_id\tgroup\r\nsub-01\tcontrol\r\nsub-02\tpatient\r\n".encode()
    )
    assert participants_matching(bids, ["group=control"]) == {"01"}  # BOM and CRLF: as a text editor's file
    (bids / "participants.tsv").write_text("subject\tgroup\nsub-01\tcontrol\n")
    with pytest.raises(InputError, match="no 'participant_id' column"):
        participants_matching(bids, ["group=control"])
    OUTCOMES[("participants.tsv: BOM + CRLF", "train")] = "read"


def test_one_scan_given_by_two_paths_is_refused(world, tmp_path, capsys, monkeypatch):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(world["good"], scans / "scan.nii.gz")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    args = ["detect", "scans/scan.nii.gz", str(scans / "scan.nii.gz"), "--model", str(world["run"]), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "given twice" in err and "Traceback" not in err and not out.exists()
    OUTCOMES[("one file by two paths", "detect")] = "refused"


def test_two_cases_of_one_name_are_refused_by_evaluate(world, tmp_path, capsys):
    _, label = world["cases"][next(iter(world["cases"]))]
    for folder in ("a", "b"):
        case = tmp_path / folder / "case01"
        case.mkdir(parents=True)
        shutil.copy(world["good"], case / "case01_t2.nii.gz")
        shutil.copy(label, case / "case01_seg.nii.gz")
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(tmp_path / "a"), "--cases", str(tmp_path / "b")]
    assert main([*args, "--out", str(out), "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "two cases are named 'case01'" in err and not out.exists()
    OUTCOMES[("two cases of one name", "evaluate")] = "refused"


# ---- class 7: the guarantee on identical outputs is the one the README states ----
def test_outputs_across_thread_counts_are_recorded_and_never_reused(world, tmp_path, capsys):
    import nibabel as nib
    import numpy as np
    import torch

    out = tmp_path / "out"
    args = ["detect", str(world["good"]), "--model", str(world["run"]), "--out", str(out), "--device", "cpu", "--quiet"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main(args) == 0
        summary = json.loads(next(out.rglob("summary.json")).read_text())
        assert summary["settings"]["torch_threads"] == 1
        first = np.asarray(nib.load(str(next(out.rglob("segmentation.nii.gz")))).dataobj)
        capsys.readouterr()
        torch.set_num_threads(2)
        assert main(args) == 0
        assert "0 already finished" in capsys.readouterr().out  # recomputed with the other count, not reused
        summary = json.loads(next(out.rglob("summary.json")).read_text())
        assert summary["settings"]["torch_threads"] == 2
        again = np.asarray(nib.load(str(next(out.rglob("segmentation.nii.gz")))).dataobj)
        assert np.array_equal(first, again)  # the masks agree across thread counts (README)
    finally:
        torch.set_num_threads(threads)
    OUTCOMES[("another thread count", "detect")] = "recomputed"


# ---- class 6: names brainuad derives from long file names fit the file system ----
def test_a_scan_with_a_long_file_name_is_detected_under_a_short_name(world, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    long_name = "s" * 240 + ".nii.gz"  # 247 characters: legal, but no room for brainuad's suffixes
    shutil.copy(world["good"], scans / long_name)
    out = tmp_path / "out"
    args = ["detect", str(scans / long_name), "--model", str(world["run"]), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert len(folder.name) <= 100 and folder.name.startswith("s" * 20) and (folder / "summary.json").is_file()
    OUTCOMES[("a 247-character file name", "detect")] = "works"


def test_a_slurm_task_id_without_its_count_is_refused():
    from brainuad.errors import ConfigError
    from brainuad.io.shards import parse_shard

    # Every array task would otherwise process every scan into the same folder.
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_COUNT"):
        parse_shard(None, {"SLURM_ARRAY_TASK_ID": "3"})
    assert parse_shard(None, {}) is None


def test_an_output_folder_name_too_long_for_its_staging_folder_is_refused_before_compute(world, tmp_path, capsys):
    _, label = world["cases"][next(iter(world["cases"]))]
    case = tmp_path / "cases" / "case01"
    case.mkdir(parents=True)
    shutil.copy(world["good"], case / "case01_t2.nii.gz")
    shutil.copy(label, case / "case01_seg.nii.gz")
    out = tmp_path / ("o" * 245)  # legal, but ".NAME.partial-XXXXXXXX" is not
    args = ["evaluate", "--model", str(world["run"]), "--cases", str(tmp_path / "cases"), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "longer than 200 bytes" in err and "Traceback" not in err and not out.exists()
    OUTCOMES[("a 245-character output folder", "evaluate")] = "refused"
