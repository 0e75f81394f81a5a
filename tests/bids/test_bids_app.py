"""``brainuad bids``: participant and group levels on a small synthetic BIDS dataset, validated by the official BIDS
validator; shards run at the same time match one unsharded run; bad input is refused without touching BIDS_DIR."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import T2W_SCANS, fixed_registration, snapshot, write_dataset

from brainuad.cli import main

RUNNER = Path(__file__).with_name("runner.py")
TINY = ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The dataset, an intensity-baseline model, and one unsharded participant + group run."""
    root = tmp_path_factory.mktemp("bids")
    bids = write_dataset(root / "ds")
    before = snapshot(bids)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("brainuad.preprocess.pipeline.estimate_transform", fixed_registration)
        scan = bids / "sub-01" / "anat" / "sub-01_run-1_T2w.nii.gz"
        prep = ["preprocess", str(scan), "--out", str(root / "prep"), "--preset", "paper-2mm"]
        assert main([*prep, "--skull-strip", "none", "--template-contrast", "t2", "--quiet"]) == 0
        train = ["train", "--method", "intensity", "--data", str(root / "prep"), "--out", str(root / "run")]
        assert main([*train, *TINY]) == 0
        out = bids / "derivatives" / "brainuad"
        args = ["bids", str(bids), str(out), "participant", "--model", str(root / "run"), "--threshold", "0.6"]
        assert main([*args, *TINY]) == 0
        assert main(["bids", str(bids), str(out), "group", "--model", str(root / "run")]) == 0
    return {"root": root, "bids": bids, "out": out, "args": args, "before": before}


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).parts[0] != "group"
    }


#: BIDS derivatives file names: key-value entities in the spec's order, then the suffix (derivatives common rules).
ENTITY_ORDER = ["sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "part", "space", "res", "desc"]
NAME = re.compile(r"^(?P<entities>(?:[a-z]+-[a-zA-Z0-9]+_)+)(?P<suffix>[a-zA-Z0-9]+)\.(?P<ext>nii\.gz|json)$")


def test_participant_and_group_write_valid_bids_derivatives(app):
    out, bids = app["out"], app["bids"]
    assert snapshot(bids) == app["before"], "the participant and group levels changed BIDS_DIR outside derivatives/"
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "brainuad"
    assert "Version" in description["GeneratedBy"][0] and description["GeneratedBy"][0]["Description"].startswith("git")
    # 7 T2w scans, each with 6 maps (3 native, 3 in MNI space) and a sidecar beside each.
    images = sorted(out.glob("sub-*/**/anat/*.nii.gz"))
    assert len(images) == 6 * T2W_SCANS
    assert (out / "sub-02/ses-2/anat/sub-02_ses-2_run-2_desc-lesions_mask.nii.gz").is_file()
    assert (out / "sub-03/anat/sub-03_acq-fast_space-MNI152NLin2009aSym_res-2_desc-anomaly_map.nii.gz").is_file()
    for image in images:
        match = NAME.match(image.name)
        assert match, image.name
        keys = [e.split("-")[0] for e in match["entities"].rstrip("_").split("_")]
        assert keys == sorted(keys, key=ENTITY_ORDER.index) and keys[0] == "sub", image.name
        participant, *session = image.relative_to(out).parts[:-2]  # sub-X[/ses-Y]/anat/name
        assert image.name.startswith(f"{participant}_{session[0]}_" if session else f"{participant}_"), image
        sidecar = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Sources"][0].startswith("bids:raw:sub-") and (bids / sidecar["Sources"][0][9:]).is_file()
        assert sidecar["ModelWeightsSHA256"] and sidecar["Threshold"] == 0.6 and sidecar["SpatialReference"]
        assert (out / sidecar["Report"]).is_file()
    validator = shutil.which("bids-validator-deno")
    if validator is None:
        pytest.skip("bids-validator-deno not installed (pip install '.[test]')")
    done = subprocess.run([validator, str(out), "--format", "json"], capture_output=True, text=True, timeout=300)
    issues = json.loads(done.stdout)["issues"]["issues"]
    assert [i for i in issues if i["severity"] == "error"] == [], done.stdout[-3000:]
    # MNI-grid files say millimetres and the template's space (issue #36): no NIFTI_UNIT warning; a README.
    assert not [i for i in issues if i.get("code") in ("NIFTI_UNIT", "README_FILE_MISSING")], done.stdout[-3000:]
    # The group level: one row per scan, most abnormal first, and a triage page with a thumbnail of each.
    rows = (out / "group" / "brainuad_scans.tsv").read_text().splitlines()
    header, rows = rows[0].split("\t"), [r.split("\t") for r in rows[1:]]
    assert header[:5] == ["participant_id", "session_id", "suffix", "scan_score", "scan_score_percentile_vs_healthy"]
    assert len(rows) == T2W_SCANS and {r[1] for r in rows} == {"n/a", "ses-1", "ses-2"}
    ranked = [(-float(r[3]), r[-1]) for r in rows]  # by score, most abnormal first; ties by name
    assert ranked == sorted(ranked) and all((out / r[-1]).is_file() for r in rows)
    page = (out / "group" / "brainuad_triage.html").read_text()
    assert page.count("data:image/png;base64,") == T2W_SCANS


def test_rerun_skips_finished_scans(app, capsys):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("brainuad.preprocess.pipeline.estimate_transform", fixed_registration)
        assert main([*app["args"], *TINY]) == 0
    assert f"0 done, {T2W_SCANS} already finished" in capsys.readouterr().out


@pytest.mark.slow
def test_three_shards_at_once_write_the_same_files_as_one_run(app, capsys):
    out = app["bids"] / "derivatives" / "sharded"
    args = [*app["args"][:2], str(out), *app["args"][3:], *TINY]
    # The unsharded run's thread count (recorded in its settings; another test may have changed this process's since):
    # outputs are bit-identical for one count (README).
    summary = json.loads(next((app["out"] / "findings").glob("*/summary.json")).read_text())
    env = {**os.environ, "OMP_NUM_THREADS": str(summary["settings"]["torch_threads"])}
    jobs = [
        subprocess.Popen([sys.executable, str(RUNNER), *args, "--shard", f"{k}/3"], env=env, stderr=subprocess.PIPE)
        for k in range(3)
    ]
    errors = [job.communicate(timeout=600)[1].decode() for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], errors
    assert _hashes(out) == _hashes(app["out"])
    # A SLURM array task takes its shard from the environment: task 1 of 0-2 has nothing left to do.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(summary["settings"]["torch_threads"])  # the count the finished results were made with
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("brainuad.preprocess.pipeline.estimate_transform", fixed_registration)
        for key, value in {"ID": "1", "COUNT": "3", "MIN": "0"}.items():
            patch.setenv(f"SLURM_ARRAY_TASK_{key}", value)
        try:
            assert main(args) == 0
        finally:
            torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert "shard 1/3" in captured.err and "0 done, 2 already finished" in captured.out


T2W = "sub-01/anat/sub-01_T2w.nii.gz"


def _bad_dataset(root: Path, files: list[str], description: bool = True) -> Path:
    root.mkdir()
    if description:
        (root / "dataset_description.json").write_text('{"Name": "bad", "BIDSVersion": "1.10.0"}')
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read: the run stops before any scan is read")
    return root


@pytest.mark.parametrize(
    ("case", "files", "options", "message"),
    [
        ("no description", [T2W], [], "no dataset_description.json"),
        ("unknown participant", [T2W], ["--participant-label", "99"], "no participant sub-99"),
        ("no such suffix", [T2W], ["--suffix", "FLAIR"], "no FLAIR scan matches"),
        ("one name", [T2W, "sub-01/anat/sub-01_T2w.nii"], [], "maps to the same derivatives"),
        ("output is BIDS_DIR", [T2W], ["OUT=BIDS"], "is the BIDS dataset itself"),
        ("output inside BIDS_DIR", [T2W], ["OUT=BIDS/sub-01"], "not under its derivatives"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written_in_bids_dir(tmp_path, capsys, case, files, options, message):
    bids = _bad_dataset(tmp_path / "ds", files, description=case != "no description")
    out = str(tmp_path / "out")
    for option in [o for o in options if o.startswith("OUT=")]:
        out = option.replace("OUT=BIDS", str(bids))
    options = [o for o in options if not o.startswith("OUT=")]
    before = snapshot(bids, skip="")
    code = main(["bids", str(bids), out, "participant", "--model", "builtin:t2", *options, "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err, err
    assert str(bids) in err or any(f in err for f in files)
    assert snapshot(bids, skip="") == before and not (tmp_path / "out").exists()


def test_train_on_a_bids_dataset_chooses_scans_by_suffix_and_participants_tsv(app, tmp_path):
    run = tmp_path / "bidsrun"
    args = ["train", "--data", str(app["bids"]), "--out", str(run), "--method", "intensity", "--suffix", "T2w"]
    args += ["--participants-filter", "group=control", "--preset", "paper-2mm", "--skull-strip", "none", *TINY]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("brainuad.preprocess.pipeline.estimate_transform", fixed_registration)
        assert main(args) == 0
    split = json.loads((run / "split.json").read_text())
    cases = sorted(Path(c).name for c in split["train"] + split["val"])
    # The control participants' (sub-01, sub-03) T2w scans; not the patient sub-02, not their T1w or FLAIR.
    assert cases == ["sub-01_run-1_T2w", "sub-01_run-2_T2w", "sub-03_acq-fast_T2w", "sub-03_acq-slow_T2w"]
    assert snapshot(app["bids"]) == app["before"]
    # A column participants.tsv does not have: a clear error naming the file.
    assert main([*args, "--participants-filter", "age=30"]) == 1
