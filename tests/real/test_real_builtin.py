"""The shipped models on real shared scans: native-space outputs, and each card's reference number recomputed."""

import json

import nibabel as nib
import numpy as np
import pytest

from brainuad.cli import main
from brainuad.io import shipped

pytestmark = pytest.mark.real


@pytest.mark.parametrize("name", ["flair", "t1", "t2"])
def test_detect_with_builtin_model_matches_its_card(name, shared_data, no_network, tmp_path):
    metrics = json.loads((shipped.resolve_model_dir(f"builtin:{name}") / "metrics.json").read_text())
    scan = shared_data / metrics["reference"]["scan"]
    assert main(["detect", str(scan), "--model", f"builtin:{name}", "--out", str(tmp_path), "--device", "cpu",
                 "--quiet"]) == 0  # fmt: skip
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    source = nib.load(str(scan))
    for output in ("anomaly_map", "reconstruction", "segmentation"):
        image = nib.load(str(folder / f"{output}.nii.gz"))
        assert image.shape == source.shape and np.allclose(image.affine, source.affine, atol=1e-4)
    summary = json.loads((folder / "summary.json").read_text())
    # ANTs' registration is reproducible to ~1 mm only (threads, metric sampling): on the same scan and weights the
    # 99.9th-percentile score moved by up to ~4 % between runs here (t1: 0.515-0.535), so 6 %, not bit-identity.
    assert summary["scan_score"] == pytest.approx(metrics["reference"]["scan_score"], rel=0.06)
