"""``brainuad evaluate`` end to end on synthetic BraTS-style cases with planted bright lesions."""

import csv
import json
import math
import shutil

import nibabel as nib
import numpy as np
import pytest

from brainuad.cli import main
from conftest import write_nifti


def _plant_lesion(scan_path, centre, radius, out_dir, name):
    """A BraTS-style case: the scan with a bright sphere, and its label file (label 2, as BraTS uses)."""
    img = nib.load(str(scan_path))
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    grid = np.indices(data.shape)
    sphere = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
    sphere &= data > 0
    data[sphere] = float(np.percentile(data[data > 0], 99.9)) * 1.4
    folder = out_dir / name
    write_nifti(folder / f"{name}_t2.nii.gz", data, img.affine)
    write_nifti(folder / f"{name}_seg.nii.gz", sphere.astype(np.uint8) * 2, img.affine)
    return folder


@pytest.fixture(scope="module")
def setup(skull_stripped_scan, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    assert (
        main(["preprocess", str(skull_stripped_scan), "--out", str(root / "prep"), "--preset", "paper-2mm", "--quiet"])
        == 0
    )
    run = root / "intensity"
    assert main(["train", "--data", str(root / "prep"), "--out", str(run), "--method", "intensity", "--quiet"]) == 0
    _plant_lesion(skull_stripped_scan, (40, 55, 45), 6, root / "tune", "tune01")
    _plant_lesion(skull_stripped_scan, (30, 45, 40), 5, root / "cases", "case01")
    _plant_lesion(skull_stripped_scan, (50, 60, 35), 7, root / "cases", "case02")
    return root


def test_evaluate_intensity_baseline_with_tuned_threshold(setup):
    out = setup / "eval"
    args = ["evaluate", "--model", str(setup / "intensity"), "--cases", str(setup / "cases")]
    args += ["--tune-cases", str(setup / "tune"), "--out", str(out), "--cache", str(setup / "cache"), "--quiet"]
    assert main([*args, "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["tuning_cases"] == ["tune01"]
    assert "tuning cases" in summary["threshold"]["source"]
    slices = summary["slices"]
    # Planted lesions are the brightest thing in the brain: the intensity baseline must find them — at the voxel
    # level. Its slice score e(u) mostly measures brain area (the image is the map), so slice AUROC is only > chance.
    assert slices["auroc"] > 0.5
    assert 0 < slices["abnormal"] < slices["counted"]
    assert slices["sensitivity"] > 0.5
    voxels = summary["voxels"]
    assert voxels["dice_mean"] > 0.5 and voxels["ap_pooled"] > 0.5
    assert voxels["best_achievable_dice_pooled"] >= voxels["dice_pooled"] - 1e-9  # an upper bound
    # Two reported cases are too few for a bootstrap interval: none is given, and the table says why.
    assert summary["intervals"]["given"] is False and all(math.isnan(v) for v in slices["auroc_ci95"])
    assert "too few cases for intervals" in (out / "table.md").read_text()
    with open(out / "per_case.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case"] for r in rows] == ["case01", "case02"]
    assert all(float(r["lesion_ml_in_crop"]) > 0 for r in rows)
    table = (out / "table.md").read_text()
    assert "| intensity (n=2" in table and "intensity (intensity)" not in table  # a run named after its kind: once
    assert (out / "roc.png").stat().st_size > 1000 and (out / "pr.png").stat().st_size > 1000


def test_evaluate_refuses_tuning_on_reported_cases(setup, capsys):
    args = ["evaluate", "--model", str(setup / "intensity"), "--cases", str(setup / "cases")]
    args += ["--tune-cases", str(setup / "cases"), "--out", str(setup / "bad"), "--quiet"]
    assert main(args) == 1
    assert "keep them apart" in capsys.readouterr().err


def test_evaluate_needs_a_threshold(setup, capsys):
    args = ["evaluate", "--model", str(setup / "intensity"), "--cases", str(setup / "cases"), "--out", str(setup / "x")]
    assert main([*args, "--quiet"]) == 1
    assert "no threshold" in capsys.readouterr().err


def test_label_on_another_grid_is_a_clear_error(setup, capsys):
    folder = setup / "mismatch" / "case09"
    image = next((setup / "cases" / "case01").glob("*_t2.nii.gz"))
    folder.mkdir(parents=True)
    (folder / "case09_t2.nii.gz").write_bytes(image.read_bytes())
    write_nifti(folder / "case09_seg.nii.gz", np.zeros((10, 10, 10), np.uint8))
    args = ["evaluate", "--model", str(setup / "intensity"), "--cases", str(setup / "mismatch")]
    args += ["--tune-cases", str(setup / "tune"), "--out", str(setup / "y"), "--cache", str(setup / "cache"), "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "case09_seg.nii.gz" in err and "does not match its image" in err


def test_calibrate_on_labelled_cases_then_evaluate_uses_it(setup, tmp_path):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(setup / "intensity", run)
    assert main(["calibrate", "--model", str(run), "--labelled", str(setup / "tune"), "--device", "cpu"]) == 0
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["method"].startswith("best pooled Dice") and calibration["tuning_dice"] > 0.5
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(run), "--cases", str(setup / "cases"), "--out", str(out)]
    assert main([*args, "--cache", str(setup / "cache"), "--quiet", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"]["value"] == pytest.approx(calibration["threshold"])
    assert "calibration.json" in summary["threshold"]["source"]


def test_ablate_writes_table_and_figures(setup):
    out = setup / "ablation"
    tiny = ["--channels", "4", "8", "8", "8", "--stem-channels", "4", "--epochs", "1", "--batch-size", "1"]
    args = [
        "ablate",
        "--data",
        str(setup / "prep"),
        "--cases",
        str(setup / "cases"),
        "--tune-cases",
        str(setup / "tune"),
    ]
    args += ["--out", str(out), "--latents", "16", "--spatial-variants", "2", "--device", "cpu", "--quiet", *tiny]
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "| dense-z16 " in table and "| spatial-c2 " in table
    for figure in ("figure4_roc.png", "figure4_pr.png", "figure5_reconstructions.png"):
        assert (out / figure).stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"dense-z16", "spatial-c2"}


def test_evaluate_slice_label_csv(setup):
    # Slice labels only (the paper's in-house format): slice metrics, no voxel metrics.
    image = next((setup / "cases" / "case01").glob("*_t2.nii.gz"))
    label = nib.load(str(next((setup / "cases" / "case01").glob("*_seg.nii.gz")))).get_fdata() > 0
    abnormal = label.any(axis=(0, 1))
    folder = setup / "csv"
    folder.mkdir()
    shutil.copy(image, folder / "scan.nii.gz")
    rows = ["image,slice,label", *(f"scan.nii.gz,{k},{int(a)}" for k, a in enumerate(abnormal))]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    out = setup / "eval-csv"
    args = ["evaluate", "--model", str(setup / "intensity"), "--cases", str(folder / "labels.csv")]
    args += ["--tune-cases", str(setup / "tune"), "--out", str(out), "--cache", str(setup / "cache"), "--quiet"]
    assert main([*args, "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "voxels" not in summary and summary["cases"] == 1
    assert 0 < summary["slices"]["abnormal"] < summary["slices"]["counted"]
    # The lesion's slices map onto MNI slices near the lesion's own: the labels survive the registration.
    assert summary["slices"]["abnormal"] <= abnormal.sum() * 2 + 2


def test_lesion_outside_the_crop_counts_as_missed(setup, skull_stripped_scan):
    # A lesion low in the posterior fossa: the paper crop (z >= -26 mm) cannot see it; it must count against Dice.
    data = nib.load(str(skull_stripped_scan)).get_fdata()
    z = 14
    x, y = np.argwhere(data[:, :, z] > 0).mean(axis=0).round().astype(int)
    _plant_lesion(skull_stripped_scan, (x, y, z), 4, setup / "outside", "low01")
    assert nib.load(str(setup / "outside" / "low01" / "low01_seg.nii.gz")).get_fdata().sum() > 50
    out = setup / "eval-outside"
    args = ["evaluate", "--model", str(setup / "intensity"), "--cases", str(setup / "outside")]
    args += ["--tune-cases", str(setup / "tune"), "--out", str(out), "--cache", str(setup / "cache"), "--quiet"]
    assert main([*args, "--device", "cpu"]) == 0
    with open(out / "per_case.csv") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["lesion_ml_outside_crop"]) > 0.3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["voxels"]["lesion_outside_crop_ml"] > 0.3
    assert float(row["dice"]) < 0.5 or float(row["lesion_ml_in_crop"]) > float(row["lesion_ml_outside_crop"])


def test_slice_labels_follow_the_files_own_orientation(setup, tmp_path):
    # The same scan stored two ways — as given, and with x/y swapped and the slices running superior → inferior —
    # with the same axial slices labelled abnormal (in each file's own slice numbering) must give the same MNI slice
    # labels. Reorienting with an already-canonical affine (a no-op) would turn the second file's labels upside down.
    from brainuad.config import PreprocessConfig
    from brainuad.data.datasets import LabelledCase
    from brainuad.evaluate.labelled import _slice_labels_from_csv
    from brainuad.preprocess.pipeline import load_case, preprocess_file

    image = nib.load(str(next((setup / "cases" / "case01").glob("*_t2.nii.gz"))))
    assert nib.aff2axcodes(image.affine)[2] == "S"  # the fixture scan is stored inferior → superior
    data = np.asarray(image.dataobj, np.float32)
    depth = data.shape[2]
    abnormal_axial = np.zeros(depth, bool)
    abnormal_axial[depth // 3 : depth // 2] = True  # a block of slices, asymmetric about the middle

    affine = image.affine
    swapped = data.transpose(1, 0, 2)[:, :, ::-1]
    swapped_affine = affine[:, [1, 0, 2, 3]].copy()
    swapped_affine[:, 3] += (depth - 1) * affine[:, 2]
    swapped_affine[:, 2] *= -1
    write_nifti(tmp_path / "as_given.nii.gz", data, affine)
    write_nifti(tmp_path / "swapped.nii.gz", swapped, swapped_affine)
    assert nib.aff2axcodes(swapped_affine)[2] == "I"

    _, folder = preprocess_file(tmp_path / "as_given.nii.gz", tmp_path / "prep", PreprocessConfig(preset="paper-2mm"))
    pre = load_case(folder)
    as_given = LabelledCase("a", tmp_path / "as_given.nii.gz", None, dict(enumerate(abnormal_axial.astype(int))))
    in_file_order = dict(enumerate(abnormal_axial[::-1].astype(int)))
    stored_swapped = LabelledCase("b", tmp_path / "swapped.nii.gz", None, in_file_order)
    known_a, abnormal_a = _slice_labels_from_csv(as_given, pre)
    known_b, abnormal_b = _slice_labels_from_csv(stored_swapped, pre)
    assert 0 < abnormal_a.sum() < known_a.sum()
    np.testing.assert_array_equal(known_a, known_b)
    np.testing.assert_array_equal(abnormal_a, abnormal_b)


def test_thresholded_case_keeps_only_the_region_voxels():
    from brainuad.evaluate.evaluation import summarise
    from brainuad.evaluate.labelled import CaseEvaluation, apply_threshold

    rng = np.random.default_rng(0)
    shape = (24, 24, 16)
    brain = np.zeros(shape, bool)
    brain[3:21, 3:21, 2:14] = True
    lesion = np.zeros(shape, bool)
    lesion[8:14, 8:14, 6:10] = True
    anomaly = (rng.random(shape) * 0.2 * brain + 0.9 * lesion).astype(np.float32)
    case = CaseEvaluation(
        name="c",
        layout="brats",
        slice_known=np.ones(shape[2], bool),
        slice_abnormal=lesion.any(axis=(0, 1)),
        brain_slices=brain.any(axis=(0, 1)),
        slice_error=anomaly.sum(axis=(0, 1)),
        normality=np.zeros(shape[2]),
        anomaly=anomaly,
        region=brain | lesion,
        lesion=lesion,
    )
    scores, truth = case.region_scores().copy(), case.region_truth().copy()
    apply_threshold(case, 0.5)
    # The volumes are gone; what the pooled voxel metrics read is unchanged, the lesion volume too.
    assert case.region is None and case.anomaly.ndim == 1 and case.lesion.ndim == 1
    np.testing.assert_array_equal(case.region_scores(), scores)
    np.testing.assert_array_equal(case.region_truth(), truth)
    assert int(case.lesion.sum()) == int(lesion.sum()) and case.dice == pytest.approx(1.0)
    summary = summarise([case], 0.5, "test", 0)
    assert summary["voxels"]["ap_pooled"] == pytest.approx(1.0)
    assert summary["voxels"]["dice_pooled"] == pytest.approx(case.dice)


def test_evaluate_reports_slice_scores_lesions_and_scans_against_healthy(setup, skull_stripped_scan, capsys):
    img = nib.load(str(skull_stripped_scan))
    data = np.asarray(img.dataobj, dtype=np.float32)
    rng = np.random.default_rng(3)
    for i in range(2):  # two held-out "healthy individuals": the scan with its own noise
        noisy = np.where(data > 0, data * rng.normal(1.0, 0.03, data.shape), 0.0).astype(np.float32)
        write_nifti(setup / "healthy" / f"h{i}.nii.gz", noisy, img.affine)
    out = setup / "eval-healthy"
    args = ["evaluate", "--model", str(setup / "intensity"), "--cases", str(setup / "cases"), "--out", str(out)]
    args += ["--tune-cases", str(setup / "tune"), "--cache", str(setup / "cache"), "--quiet", "--device", "cpu"]
    assert main([*args, "--healthy", str(setup / "healthy")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    slices = summary["slices"]
    assert set(slices["by_score"]) == {"paper_eu", "mean", "p99", "segmented_ml"}  # no healthy calibration: no z
    assert slices["score"] in slices["by_score"] and "tuning cases" in slices["score_choice"]["source"]
    assert set(slices["score_choice"]["tuning_ap"]) == set(slices["by_score"])
    assert slices["auroc"] == slices["by_score"][slices["score"]]["auroc"]
    # Planted bright lesions against the same anatomy without one: the scan score separates them.
    scans = summary["scans"]
    assert scans["patients"] == 2 and scans["healthy"] == 2 and scans["auroc"] == pytest.approx(1.0)
    assert summary["healthy"]["false_positive_ml_mean"] >= 0 and summary["healthy"]["scans"] == 2
    lesions = summary["lesions"]
    assert lesions["reference_lesions"] == 2 and lesions["sensitivity"] == pytest.approx(1.0)
    with open(out / "per_lesion.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(r["kind"] == "reference" for r in rows) == 2 and all(float(r["volume_ml"]) > 0 for r in rows)
    # The model's own training scans are not held-out healthy scans.
    assert main([*args, "--out", str(setup / "z"), "--healthy", str(setup / "prep")]) == 1
    assert "report false positives on held-out healthy scans only" in capsys.readouterr().err


def test_normative_model_train_calibrate_detect_evaluate(setup, skull_stripped_scan, tmp_path):
    """The normative baseline runs the same chain as every model: fitted on healthy scans (copies of the fixture's
    preprocessed scan with varied contrast), calibrated on a held-out one, then detect and evaluate."""
    import shutil

    from brainuad.io.volumes import Volume, load_volume, save_volume

    case = next(p for p in (setup / "prep").iterdir() if p.is_dir())
    for i, gain in enumerate((0.9, 1.0, 1.1, 0.95)):
        copy = shutil.copytree(case, tmp_path / ("val" if i == 3 else "healthy") / f"h{i}")
        image = load_volume(copy / "image.nii.gz")
        save_volume(Volume(np.clip(image.array * gain, 0, 1), image.affine), copy / "image.nii.gz")
        record = json.loads((copy / "record.json").read_text())  # another individual's scan, not the same file
        (copy / "record.json").write_text(json.dumps({**record, "input": {**record["input"], "sha256": f"h{i}"}}))
    run = tmp_path / "normative"
    args = ["train", "--data", str(tmp_path / "healthy"), "--val-data", str(tmp_path / "val"), "--out", str(run)]
    assert main([*args, "--method", "normative", "--quiet"]) == 0
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 3 and [p.split("/")[-1] for p in split["val"]] == ["h3"]
    assert main(["calibrate", "--model", str(run), "--healthy", str(tmp_path / "val"), "--device", "cpu"]) == 0
    out = tmp_path / "found"
    args = ["detect", str(setup / "cases" / "case01" / "case01_t2.nii.gz"), "--model", str(run), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    assert any(out.rglob("*anomaly*.nii.gz"))
    args = ["evaluate", "--model", str(run), "--cases", str(setup / "cases"), "--tune-cases", str(setup / "tune")]
    args += ["--out", str(tmp_path / "eval"), "--cache", str(setup / "cache"), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    # The healthy copies match the scan but for contrast and the planted lesions: |x − centre| finds them well above
    # chance (the lesion share of the brain); re-registration of the lesion cases blurs the edges.
    assert summary["model"]["kind"] == "normative" and summary["voxels"]["ap_pooled"] > 0.1  # chance: < 0.01
    assert summary["warning"] is None  # a baseline is not flagged as a model that learned nothing


def test_restore_model_trains_calibrates_detects_and_evaluates(setup, skull_stripped_scan, tmp_path):
    """The synthetic-anomaly restoration model runs the whole chain on tiny volumes; its own check (does it restore
    planted anomalies?) is in the run's summary, and the evaluation reports FROC points under the stated hit rule."""
    case = next(p for p in (setup / "prep").iterdir() if p.is_dir())
    for i in range(3):
        copy = shutil.copytree(case, tmp_path / ("val" if i == 2 else "healthy") / f"h{i}")
        record = json.loads((copy / "record.json").read_text())
        (copy / "record.json").write_text(json.dumps({**record, "input": {**record["input"], "sha256": f"r{i}"}}))
    run = tmp_path / "restore"
    args = ["train", "--data", str(tmp_path / "healthy"), "--val-data", str(tmp_path / "val"), "--out", str(run)]
    tiny = ["--channels", "4", "8", "--stem-channels", "4", "--epochs", "2", "--batch-size", "2", "--device", "cpu"]
    assert main([*args, "--method", "restore", *tiny, "--quiet"]) == 0
    check = json.loads((run / "summary.json").read_text())["reconstruction_check"]
    assert check["restores_planted_anomalies"] in (True, False)
    assert check["planted_mse_unrestored"] > 0
    assert main(["calibrate", "--model", str(run), "--healthy", str(tmp_path / "val"), "--device", "cpu"]) == 0
    out = tmp_path / "found"
    args = ["detect", str(setup / "cases" / "case01" / "case01_t2.nii.gz"), "--model", str(run), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    assert any(out.rglob("*anomaly*.nii.gz"))
    args = ["evaluate", "--model", str(run), "--cases", str(setup / "cases"), "--tune-cases", str(setup / "tune")]
    args += ["--out", str(tmp_path / "eval"), "--cache", str(setup / "cache"), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["model"]["kind"] == "restore"
    froc = summary["froc"]
    assert "10%" in froc["reported"]["hit_rule"] and froc["reported"]["lesions"] == 2 and froc["tuning"]["scans"] == 1
    assert len(froc["reported"]["thresholds"]) == len(froc["reported"]["false_positives_per_scan"]) == 31
    assert "operating_threshold" in froc["operating_points"] and (tmp_path / "eval" / "froc.png").is_file()


def test_a_method_label_names_the_run_only_when_it_says_more():
    from brainuad.evaluate.evaluation import method_label

    assert method_label("ae", "ae") == "ae"  # was "ae (ae)"
    assert method_label("ae", "t2-long") == "ae (t2-long)"


def test_extent_level_chosen_on_tuning_cases_delineates_at_the_calibrated_threshold(setup, tmp_path, capsys):
    """Issue #34: the healthy threshold decides where a finding is; the extent level, chosen on labelled tuning cases,
    how far it reaches. detect and evaluate use both by default and say so; the tuning cases cannot be reported."""
    run = tmp_path / "run"
    shutil.copytree(setup / "intensity", run)
    assert main(["calibrate", "--model", str(run), "--healthy", str(setup / "prep"), "--device", "cpu"]) == 0
    strict = json.loads((run / "calibration.json").read_text())["threshold"]
    out = tmp_path / "plain"
    args = ["evaluate", "--model", str(run), "--cases", str(setup / "cases"), "--cache", str(setup / "cache")]
    assert main([*args, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    plain = json.loads((out / "summary.json").read_text())
    assert plain["threshold"]["extent"] is None
    capsys.readouterr()
    assert main(["calibrate", "--model", str(run), "--extent-cases", str(setup / "tune"), "--device", "cpu"]) == 0
    assert "extent level" in capsys.readouterr().out
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["threshold"] == strict  # the strict level is kept
    assert 0 < calibration["extent_threshold"] <= strict and calibration["extent_tuning_cases"] == ["tune01"]
    out = tmp_path / "grown"
    assert main([*args, "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    grown = json.loads((out / "summary.json").read_text())
    assert grown["threshold"]["extent"] == pytest.approx(calibration["extent_threshold"])
    assert grown["voxels"]["dice_mean"] >= plain["voxels"]["dice_mean"] - 1e-9
    scan = setup / "cases" / "case01" / "case01_t2.nii.gz"
    detected = tmp_path / "detect"
    assert main(["detect", str(scan), "--model", str(run), "--out", str(detected), "--device", "cpu", "--quiet"]) == 0
    summary = json.loads(next(detected.rglob("summary.json")).read_text())
    assert summary["extent_threshold"] == pytest.approx(calibration["extent_threshold"])
    assert "hysteresis" in summary["extent_source"]
    assert "extent level" in next(detected.rglob("report.html")).read_text()
    # MNI-grid outputs say so in their header (issue #36): the template's code (4, MNI152) and millimetres.
    mni_files = [*detected.rglob("mni/*.nii.gz"), *(setup / "prep").glob("*/image.nii.gz")]
    assert len(mni_files) >= 4
    for path in mni_files:
        header = nib.load(str(path)).header
        assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 4), path
        assert header.get_xyzt_units()[0] == "mm", path
    # The case the extent was chosen on cannot be reported, even renamed.
    copy = tmp_path / "copies" / "renamed"
    shutil.copytree(setup / "tune" / "tune01", copy)
    for path in copy.iterdir():
        path.rename(copy / path.name.replace("tune01", "renamed"))
    assert main(["evaluate", "--model", str(run), "--cases", str(tmp_path / "copies"), "--out", str(tmp_path / "x"),
                 "--quiet", "--device", "cpu"]) == 1  # fmt: skip
    assert "extent tuning case tune01" in capsys.readouterr().err
