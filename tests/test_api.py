"""The notebook API (issue #36): ``brainuad.detect`` returns nibabel images, the lesion table and scores, renders
itself in Jupyter, opens an interactive viewer, and leaves matplotlib's backend alone."""

import sys

import nibabel as nib
import numpy as np
import pytest


def test_detect_in_a_notebook_returns_images_a_table_and_scores(skull_stripped_scan, tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    import brainuad

    findings = brainuad.detect(skull_stripped_scan, model="builtin:t1")
    assert isinstance(findings, brainuad.Findings)
    scan = nib.load(str(skull_stripped_scan))
    for image in (findings.anomaly_map, findings.segmentation):
        assert isinstance(image, nib.Nifti1Image) and image.shape == scan.shape
    assert findings.anomaly_map_mni.shape == (80, 96, 48)
    assert set(np.unique(findings.segmentation.get_fdata())) <= {0, 1}
    assert np.isfinite(findings.scan_score) and findings.threshold > 0
    assert findings.model["name"] == "builtin:t1" and len(findings.model["weights_sha256"]) == 64
    page = findings._repr_html_()
    assert "brainuad findings" in page and "builtin:t1" in page and "<table>" in page
    viewer = findings.view()
    viewer.save_as_html(str(tmp_path / "viewer.html"))
    assert (tmp_path / "viewer.html").stat().st_size > 10_000  # self-contained: the images are embedded
    # The same scan as a nibabel image: the same findings.
    again = brainuad.detect(scan, model="builtin:t1")
    assert np.array_equal(again.segmentation_mni.get_fdata(), findings.segmentation_mni.get_fdata())
    assert matplotlib.get_backend() == backend  # the report's figures never switch the notebook's backend


def test_importing_brainuad_is_light_and_figures_leave_the_backend_alone(tmp_path):
    import subprocess

    code = (
        "import sys, matplotlib; matplotlib.use('template'); import brainuad; assert 'torch' not in sys.modules; "
        "from brainuad.report.figures import plot_loss_curve; "
        f"plot_loss_curve([{{'epoch': 1, 'train_loss': 1, 'val_loss': 2}}], r'{tmp_path / 'loss.png'}'); "
        "assert matplotlib.get_backend() == 'template', matplotlib.get_backend()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_a_bad_scan_is_refused_by_name(tmp_path):
    import brainuad
    from brainuad.errors import InputError

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a scan")
    with pytest.raises(InputError, match=r"bad\.nii\.gz"):
        brainuad.detect(bad, model="builtin:t1")
