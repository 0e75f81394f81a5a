"""Same scan, same answer: ``brainuad detect`` twice gives bit-identical outputs, and two runs into one folder at the
same time agree (one writes, the other waits and reuses it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainuad.cli import main
from conftest import write_nifti

MAPS = ("anomaly_map.nii.gz", "reconstruction.nii.gz", "segmentation.nii.gz")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def t2_scan(tmp_path_factory) -> Path:
    """A skull-stripped synthetic T2 'scan' (the MNI T2 template, shifted, on a 2 mm grid): builtin:t2's contrast."""
    from brainuad.preprocess.registration import Transform, to_native
    from brainuad.preprocess.templates import Grid, mni_template

    template = mni_template("t2")
    shape = (84, 100, 78)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -2.0 * (np.asarray(shape) - 1) / 2
    shift = np.eye(4)
    shift[:3, 3] = [3.0, -5.0, 2.0]
    grid = Grid("t", template.shape, tuple(map(tuple, template.affine)))
    native = to_native(template.array, Transform(shift, affine, shape, ("R", "A", "S")), grid).array * 800.0
    native[native < 8] = 0.0
    return write_nifti(tmp_path_factory.mktemp("t2") / "sub-02_T2w.nii.gz", native.astype(np.float32), affine)


def _detect(scan: Path, out: Path, *extra: str) -> Path:
    code = main(["detect", str(scan), "--model", "builtin:t2", "--out", str(out), "--device", "cpu", "--quiet", *extra])
    assert code == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def _assert_identical(first: Path, second: Path) -> None:
    for name in MAPS:
        for sub in (".", "mni"):
            a = np.asanyarray(nib.load(str(first / sub / name)).dataobj)
            b = np.asanyarray(nib.load(str(second / sub / name)).dataobj)
            np.testing.assert_array_equal(a, b, err_msg=f"{sub}/{name} differs between two runs")
    assert (first / "slice_scores.csv").read_text() == (second / "slice_scores.csv").read_text()
    one, two = (json.loads((f / "summary.json").read_text()) for f in (first, second))
    for key in ("scan_score", "lesion_count", "lesions", "threshold", "most_abnormal_mni_slices"):
        assert one[key] == two[key], key


def test_detect_twice_on_a_synthetic_scan_is_bit_identical(t2_scan, tmp_path, capsys):
    first = _detect(t2_scan, tmp_path / "a")
    assert "healthy reference simulated" in capsys.readouterr().out  # the console line of builtin:t2's findings
    second = _detect(t2_scan, tmp_path / "b")
    _assert_identical(first, second)


@pytest.mark.slow
def test_detect_twice_on_a_real_scan_is_bit_identical_and_says_the_reference_is_simulated(shared_data, tmp_path):
    scan = shared_data / "healthy" / "IXI002-Guys-0828-T2_brain.nii.gz"
    # builtin:t2's healthy reference is simulated: the console (a warning the CLI prints) and the report say so, and
    # no percentile is given.
    with pytest.warns(UserWarning, match="healthy reference is 4 simulated scans"):
        first = _detect(scan, tmp_path / "a")
    second = _detect(scan, tmp_path / "b")
    _assert_identical(first, second)
    assert "simulated" in (first / "report.html").read_text()
    assert json.loads((first / "summary.json").read_text())["scan_score_percentile_vs_healthy"] is None


@pytest.mark.slow
def test_two_concurrent_detects_into_one_folder_agree(t2_scan, tmp_path):
    out = tmp_path / "shared_out"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "brainuad", "detect", str(t2_scan), "--model", "builtin:t2"]
    command += ["--out", str(out), "--device", "cpu", "--quiet"]
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    assert not list(out.glob(".*partial*"))
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    # One of the two computed the result, the other waited and reused it: the folder is one run's, whole.
    assert sum("skipped" in e or "reused" in e for e in errors) <= 1
    alone = _detect(t2_scan, tmp_path / "alone")
    _assert_identical(folder, alone)


def test_figure_rows_show_the_largest_finding_of_a_synthetic_glioma():
    """A glioma high in the brain (z = 34), abnormal-looking skull-base slices (z = 2–4): the rows show the glioma."""
    from brainuad.infer.detect import figure_slices

    shape = (40, 48, 48)
    brain = np.zeros(shape, bool)
    brain[4:36, 4:44, 1:46] = True
    z, y, x = (np.indices(shape)[i] for i in (2, 1, 0))
    glioma = ((x - 20) ** 2 + (y - 24) ** 2 + (z - 34) ** 2) <= 36  # ~0.9 mL at 1 mm: the largest finding
    segmentation = np.zeros(shape, np.int32)
    segmentation[glioma] = 1
    segmentation[10:12, 10:12, 3] = 2  # a speck at the skull base
    normality = np.ones(shape[2])
    normality[[2, 3, 4]] = [0.0, 0.05, 0.1]  # the skull base scores as most abnormal
    slices = figure_slices(segmentation, normality, brain)
    assert 34 in slices and len(slices) == 3
    # A binary segmentation (no component ids) gives the same glioma row.
    assert 34 in figure_slices(segmentation > 0, normality, brain)
