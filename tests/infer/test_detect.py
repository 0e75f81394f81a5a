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
    # One synthetic scan trains and calibrates the tiny model (the refusal is tested in test_cohort.py).
    args = ["calibrate", "--model", str(run), "--healthy", str(trained / "prep"), "--allow-training-scans"]
    assert main([*args, "--device", "cpu"]) == 0
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
    assert "Scan triage" in report and "no percentile among healthy scans" in report
    assert all(r["calibrated_z"] == "nan" for r in rows)
    # Re-running skips the finished scan.
    assert (
        main(["detect", str(skull_stripped_scan), "--model", str(run), "--out", str(out), "--device", "cpu", "--quiet"])
        == 0
    )
    assert not list(out.glob(".*partial*"))


def _longest_coloured_run(pixels: np.ndarray) -> int:
    """The longest vertical run of clearly coloured pixels in any column: a colour bar spans most of the figure,
    heatmap blobs only part of one panel."""
    coloured = (pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.25
    best = 0
    for column in coloured.T:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], column.astype(np.int8), [0]])))
        if edges.size:
            best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


def _marker_pixels(pixels: np.ndarray) -> int:
    """Pure-yellow pixels: the L/R and A/P letters drawn on the grey slices."""
    return int(((pixels[..., 0] > 0.9) & (pixels[..., 1] > 0.9) & (pixels[..., 2] < 0.2)).sum())


def test_report_shows_its_figures_in_headless_chromium(trained, skull_stripped_scan, tmp_path):
    import matplotlib.image

    run = trained / "run"
    out = tmp_path / "det"
    args = ["detect", str(skull_stripped_scan), "--model", str(run), "--out", str(out), "--threshold", "0.05"]
    assert main([*args, "--device", "cpu", "--quiet"]) == 0
    folder = out / "sub-01_T2w"
    report = folder / "report.html"
    text = report.read_text()
    summary = json.loads((folder / "summary.json").read_text())
    # One threshold, named; the lesion table; a readable summary table, not raw JSON.
    assert "Segmentation threshold <b>0.05</b> (given)" in text and "volume (mL, native)" in text
    assert "<table class='summary'>" in text and "<pre>{" not in text
    assert summary["lesion_count"] == len(summary["lesions"]) and summary["threshold_source"] == "given"
    if summary["lesions"]:
        first = summary["lesions"][0]
        assert first["volume_ml_native"] > 0 and len(first["centroid_mni_mm"]) == 3 and first["peak_score"] > 0.05
    figure = matplotlib.image.imread(str(folder / "figure_rows.png"))[..., :3]
    assert _longest_coloured_run(figure) > 0.5 * figure.shape[0]  # the heatmap's colour bar
    assert _marker_pixels(figure) > 50  # L/R and A/P letters
    page = render_in_chromium(report, tmp_path / "page.png")
    with_figures = coloured_fraction(page)
    # The same page without its images: what remains is text, so the figures are what the browser showed.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"src='data:image/png;base64,[^']*'", "src=''", text))
    without = render_in_chromium(bare, tmp_path / "bare.png")
    assert with_figures > 0.01 and with_figures > 10 * coloured_fraction(without)
    # The browser shows the colour bar and the orientation letters (absent from the page without its images).
    assert _longest_coloured_run(page) > 300 > _longest_coloured_run(without)
    assert _marker_pixels(page) > 50 and _marker_pixels(without) == 0


def test_a_model_that_learned_nothing_gets_a_banner(tmp_path):
    from brainuad.infer.detect import learned_nothing_warning
    from brainuad.report.html import html_report

    run = tmp_path / "run"
    run.mkdir()
    assert learned_nothing_warning(run) is None  # no summary.json: no verdict, no banner
    (run / "summary.json").write_text(json.dumps({"epochs_done": 3}))
    assert learned_nothing_warning(run) is None  # no reconstruction check recorded
    check = {"beats_mean_image": False, "model_mse": 0.012, "mean_image_mse": 0.010}
    (run / "summary.json").write_text(json.dumps({"epochs_done": 3, "reconstruction_check": check}))
    warning = learned_nothing_warning(run)
    assert "learned nothing beyond the healthy mean image" in warning and "model mse 0.012" in warning
    page = html_report("findings", {"a": 1.23456789}, {}, tmp_path / "r.html", banner=warning)
    text = page.read_text()
    assert "class='banner'" in text and "learned nothing" in text and "<td>1.235</td>" in text
    (run / "summary.json").write_text(json.dumps({"reconstruction_check": {**check, "beats_mean_image": True}}))
    assert learned_nothing_warning(run) is None


def test_the_lesion_table_is_one_builder_for_detect_and_the_demo():
    from brainuad.infer.detect import lesion_section

    lesions = [{"id": 1, "volume_ml_native": 0.048, "peak_score": 0.5, "centroid_mni_mm": [1.0, -2.0, 14.0]}]
    ((heading, table),) = lesion_section(lesions).items()
    assert heading == "Lesions (1 components, largest first)"
    assert "volume (mL, native)" in table and "<td>0.048</td>" in table and "1, -2, 14" in table
    ((heading, table),) = lesion_section([], "BraTS-001").items()
    assert heading == "BraTS-001: lesions (0 components, largest first)" and "No component" in table
