"""Shared fixtures: tiny synthetic volumes written to tmp_path, and the path of the real data (if present)."""

from __future__ import annotations

import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save an array as NIfTI (identity affine unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def lps_affine(shape: tuple[int, int, int], spacing: float = 2.0) -> np.ndarray:
    """An LPS-oriented affine centred on the volume (like BraTS or DICOM-derived files)."""
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = [spacing * (shape[0] - 1) / 2, spacing * (shape[1] - 1) / 2, -spacing * (shape[2] - 1) / 2]
    return affine


def ellipsoid(
    shape: tuple[int, int, int], radii_fraction: tuple[float, float, float] = (0.35, 0.4, 0.35)
) -> np.ndarray:
    """Boolean ellipsoid centred in the volume."""
    grid = np.meshgrid(*[np.linspace(-0.5, 0.5, s) for s in shape], indexing="ij")
    return sum((g / r) ** 2 for g, r in zip(grid, radii_fraction)) <= 1.0


@pytest.fixture(scope="session", autouse=True)
def brainuad_cache_dir(tmp_path_factory):
    """brainuad's cache folder (training volume caches) in a temporary folder, never the user's ~/.cache."""
    import os

    folder = tmp_path_factory.mktemp("brainuad-cache")
    previous = os.environ.get("BRAINUAD_CACHE_DIR")
    os.environ["BRAINUAD_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("BRAINUAD_CACHE_DIR", None)
    else:
        os.environ["BRAINUAD_CACHE_DIR"] = previous


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails (shipped models must work offline)."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def shared_data() -> Path:
    """The real MRI in ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("real data (../shared/data) not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def skull_stripped_scan(tmp_path_factory):
    """A skull-stripped 'scan': the MNI template moved by a known rigid transform onto a 2 mm LPS grid."""
    from brainuad.preprocess.registration import Transform, to_native
    from brainuad.preprocess.templates import Grid, mni_template

    template = mni_template("t1")
    shape = (84, 100, 78)
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = -2.0 * (np.asarray(shape) - 1) / 2
    truth = np.eye(4)
    truth[:3, 3] = [4.0, -6.0, 3.0]
    grid = Grid("t", template.shape, tuple(map(tuple, template.affine)))
    native = to_native(template.array, Transform(truth, ras, shape, ("R", "A", "S")), grid).array * 800.0
    native[native < 8] = 0.0
    # Store it in LPS voxel order, as many scanners write.
    lps = ras.copy()
    lps[:3, 0] *= -1
    lps[:3, 1] *= -1
    lps[:3, 3] = ras[:3, :3] @ [shape[0] - 1, shape[1] - 1, 0] + ras[:3, 3]
    path = tmp_path_factory.mktemp("scan") / "sub-01_T2w.nii.gz"
    write_nifti(path, native[::-1, ::-1, :].astype(np.float32), lps)
    return path


def render_in_chromium(html_path: Path, png_path: Path, height: int = 3000) -> np.ndarray:
    """Screenshot a page in headless Chromium (skips when Chromium is absent); returns the RGB pixels."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--screenshot={png_path}",
            f"--window-size=1200,{height}",
            html_path.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=300,  # a loaded 2-core machine has taken over 120 s to start Chromium
    )
    import matplotlib.image

    return matplotlib.image.imread(str(png_path))[..., :3]


def coloured_fraction(pixels: np.ndarray) -> float:
    """Share of pixels that are clearly coloured (figures: heatmaps, curves), not grey text on white."""
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return float((spread > 0.25).mean())
