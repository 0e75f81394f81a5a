"""Detection end to end on a synthetic scan: preprocess → train (tiny) → calibrate → detect, all through the CLI."""

import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest

from brainuad.cli import main
from conftest import coloured_fraction, render_in_chromium

TINY = ["--channels", "4", "8", "8", "8", "--stem-channels", "4", "--latent", "16", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def trained(skull_stripped_scan, tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    assert (
        main(["preprocess", str(skull_stripped_scan), "--out", str(root / "prep"), "--preset", "paper-2mm", "--quiet"])
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(root / "prep"),
                "--out",
                str(root / "run"),
                "--epochs",
                "2",
                "--batch-size",
                "1",
                *TINY,
            ]
        )
        == 0
    )
    return root


def test_detect_requires_calibration_or_threshold(trained, skull_stripped_scan, capsys):
    code = main(
        [
            "detect",
            str(skull_stripped_scan),
            "--model",
            str(trained / "run"),
            "--out",
            str(trained / "nocal"),
            "--quiet",
        ]
    )
    assert code == 1 and "calibrate" in capsys.readouterr().err


def test_calibrate_then_detect_writes_aligned_outputs(trained, skull_stripped_scan):
    run = trained / "run"
    assert main(["calibrate", "--model", str(run), "--healthy", str(trained / "prep"), "--device", "cpu"]) == 0
    calibration = json.loads((run / "calibration.json").read_text())
    # One healthy scan, and the one the model was trained on: a threshold, but no healthy reference, and it says so.
    assert calibration["threshold"] > 0 and calibration["slice_errors"] is None
    assert calibration["held_out_healthy_scans"] == 0 and "used in training" in calibration["notes"][0]

    out = trained / "det"
    assert (
        main(["detect", str(skull_stripped_scan), "--model", str(run), "--out", str(out), "--device", "cpu", "--quiet"])
        == 0
    )
    folder = out / "sub-01_T2w"
    source = nib.load(str(skull_stripped_scan))
    for name in ("anomaly_map.nii.gz", "reconstruction.nii.gz", "segmentation.nii.gz"):
        native = nib.load(str(folder / name))
        assert native.shape == source.shape
        np.testing.assert_allclose(native.affine, source.affine, atol=1e-5)
        assert nib.load(str(folder / "mni" / name)).shape == (80, 96, 48)
    with open(folder / "slice_scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 48 and {"summed_error", "normality_score", "calibrated_z", "native_slice"} <= set(rows[0])
    scores = [float(r["normality_score"]) for r in rows]
    assert min(scores) == 0.0 and max(scores) == 1.0
    report = (folder / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 2 and "src='http" not in report  # self-contained
    assert (folder / "figure_rows.png").stat().st_size > 1000
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["threshold"] == pytest.approx(calibration["threshold"])
    assert summary["scan_score_percentile_vs_healthy"] is None  # fewer than 3 held-out healthy scans
    assert all(r["calibrated_z"] == "nan" for r in rows)
    # Re-running skips the finished scan.
    assert (
        main(["detect", str(skull_stripped_scan), "--model", str(run), "--out", str(out), "--device", "cpu", "--quiet"])
        == 0
    )
    assert not list(out.glob(".*partial*"))


def test_report_shows_its_figures_in_headless_chromium(trained, skull_stripped_scan, tmp_path):
    run = trained / "run"
    out = tmp_path / "det"
    args = ["detect", str(skull_stripped_scan), "--model", str(run), "--out", str(out), "--threshold", "0.05"]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    report = out / "sub-01_T2w" / "report.html"
    with_figures = coloured_fraction(render_in_chromium(report, tmp_path / "page.png"))
    # The same page without its images: what remains is text, so the figures are what the browser showed.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"src='data:image/png;base64,[^']*'", "src=''", report.read_text()))
    without = coloured_fraction(render_in_chromium(bare, tmp_path / "bare.png"))
    assert with_figures > 0.01 and with_figures > 10 * without
