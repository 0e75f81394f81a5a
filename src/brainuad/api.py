"""The Python API for notebooks: ``brainuad.detect(scan, model="builtin:t2")`` → a :class:`Findings` object holding
nibabel images, the lesion table and the scores, that shows itself in Jupyter.

The same chain as ``brainuad detect`` (preprocessing, the contrast check, the model, the calibrated threshold and its
extent level), in memory: nothing is written. Figures are :class:`matplotlib.figure.Figure` objects and the viewer is
nilearn's self-contained HTML viewer, so nothing touches matplotlib's global backend.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import nibabel as nib

    from brainuad.infer.trained import TrainedModel


@dataclass
class Findings:
    """What ``detect`` finds in one scan (the scan's own space unless named ``*_mni``).

    Attributes:
        scan: The input scan (RAS+ voxel order).
        anomaly_map: The post-processed anomaly map on the scan's grid.
        segmentation: The findings (0/1) on the scan's grid.
        anomaly_map_mni: The anomaly map on the model's MNI crop grid.
        segmentation_mni: The findings on the MNI crop grid.
        lesions: One dict per finding, largest first (volume in mL, centroids in scanner and MNI mm, peak and mean
            score): the rows of :meth:`lesion_table`.
        scan_score: The 99.9th percentile of the anomaly map inside the brain.
        scan_percentile: The scan score's percentile among the calibration's real healthy scans (``None``: none).
        threshold: The segmentation threshold; ``extent``: its hysteresis extent level (``None``: none).
        model: The model's identity: its name or folder and the SHA-256 of its weights.
        warnings: Quality-control warnings about the scan.
    """

    scan: nib.Nifti1Image
    anomaly_map: nib.Nifti1Image
    segmentation: nib.Nifti1Image
    anomaly_map_mni: nib.Nifti1Image
    segmentation_mni: nib.Nifti1Image
    lesions: list[dict]
    scan_score: float
    scan_percentile: float | None
    threshold: float
    extent: float | None
    model: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    @property
    def lesion_volume_ml(self) -> float:
        """The findings' total volume on the scan's own grid (mL)."""
        return float(sum(r["volume_ml_native"] or 0.0 for r in self.lesions))

    def lesion_table(self) -> Any:
        """The lesions as a pandas DataFrame (one row a finding, largest first).

        Raises:
            ImportError: pandas is not installed (``pip install pandas``); :attr:`lesions` holds the same rows.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            message = "lesion_table() needs pandas (pip install pandas); Findings.lesions holds the rows"
            raise ImportError(message) from exc
        return pd.DataFrame(self.lesions)

    def _repr_html_(self) -> str:
        percentile = "n/a (no real healthy reference)"
        if self.scan_percentile is not None:
            percentile = f"{self.scan_percentile:.0f}"
        extent = f" (extent {self.extent:.4g})" if self.extent is not None else ""
        rows = [
            ("model", f"{self.model['name']} (weights {self.model['weights_sha256'][:12]})"),
            ("findings", f"{len(self.lesions)}, {self.lesion_volume_ml:.2f} mL"),
            ("scan score", f"{self.scan_score:.4g}"),
            ("percentile among healthy scans", percentile),
            ("threshold", f"{self.threshold:.4g}{extent}"),
        ]
        table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        lesions = "".join(
            f"<tr><td>{r['id']}</td><td>{(r['volume_ml_native'] or 0):.2f}</td>"
            f"<td>{', '.join(f'{c:.0f}' for c in r['centroid_mni_mm'])}</td><td>{r['peak_score']:.3g}</td></tr>"
            for r in self.lesions[:10]
        )
        header = "<tr><th>id</th><th>mL</th><th>MNI centroid (mm)</th><th>peak</th></tr>"
        warned = "".join(f"<p>⚠ {html.escape(w)}</p>" for w in self.warnings)
        return (
            f"<div><b>brainuad findings</b><table>{table}</table>"
            + (f"<table>{header}{lesions}</table>" if lesions else "<p>No finding above the threshold.</p>")
            + warned
            + "<p>A research tool, not a medical device.</p></div>"
        )

    def view(self, **kwargs: Any) -> Any:
        """An interactive, self-contained viewer of the anomaly map over the scan (nilearn's ``view_img``):
        scrollable in three planes, works offline; in Jupyter it displays itself, elsewhere ``.save_as_html(PATH)``.

        Args:
            **kwargs: Passed to :func:`nilearn.plotting.view_img` (e.g. ``cmap``).
        """
        from nilearn.plotting import view_img

        options = {"threshold": self.extent or self.threshold, "symmetric_cmap": False, "cmap": "hot",
                   "title": f"brainuad: {len(self.lesions)} finding(s)", **kwargs}  # fmt: skip
        return view_img(self.anomaly_map, bg_img=self.scan, **options)


def detect(
    image: str | Path | nib.Nifti1Image,
    model: str | Path | TrainedModel = "builtin:t2",
    *,
    threshold: float | None = None,
    device: str = "cpu",
    allow_contrast_mismatch: bool = False,
) -> Findings:
    """Find anomalies in one raw scan, in memory.

    Args:
        image: A NIfTI file or a nibabel image (any orientation; validated as ``brainuad detect`` validates files).
        model: ``builtin:NAME``, a trained run folder, or a model loaded once with
            :meth:`brainuad.infer.trained.TrainedModel.load` (pass it to detect many scans).
        threshold: The segmentation threshold; ``None`` = the calibrated one, delineated by its extent level.
        device: ``cpu``, ``cuda`` or ``auto``.
        allow_contrast_mismatch: Run a scan whose contrast is far from the model's calibration scans anyway.

    Returns:
        The findings.

    Raises:
        BrainuadError: An unusable scan or model (the message names the file).
    """
    import nibabel as nib
    import numpy as np

    from brainuad.infer.detect import check_case_for_model
    from brainuad.infer.postprocessing import describe_lesions
    from brainuad.infer.trained import TrainedModel
    from brainuad.io.volumes import load_volume
    from brainuad.preprocess.pipeline import preprocess_volume

    trained = model if isinstance(model, TrainedModel) else TrainedModel.load(model, device)
    if isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        # Through a file: the same validation (orientation codes, values, size) as a scan read from disk.
        with tempfile.TemporaryDirectory(prefix="brainuad-api-") as folder:
            path = Path(folder) / "scan.nii.gz"
            nib.save(image, str(path))
            volume = load_volume(path, "image")
        volume.path = None
        where: str | Path = "<nibabel image>"
    else:
        volume = load_volume(image, "image")
        where = image
    case = preprocess_volume(volume, trained.config.preprocessing, name="scan")
    check_case_for_model(case, trained, where, allow_contrast_mismatch)
    if threshold is not None:
        from brainuad.errors import ConfigError
        from brainuad.infer.calibration import check_threshold

        if check_threshold(threshold):
            raise ConfigError(f"threshold {check_threshold(threshold)}")
    threshold, _ = trained.threshold(threshold, "given", "pass threshold=VALUE")
    detection = trained.detect(case, threshold)
    native_labels = case.to_native(detection.segmentation, order=0)
    native_map = case.to_native(detection.anomaly, order=1)
    lesions = describe_lesions(
        detection.segmentation, detection.anomaly, case.grid.affine_array, native_labels.array, native_labels.affine
    )
    mni = case.grid.affine_array
    return Findings(
        scan=nib.Nifti1Image(volume.array, volume.affine),
        anomaly_map=nib.Nifti1Image(native_map.array.astype(np.float32), native_map.affine),
        segmentation=nib.Nifti1Image((native_labels.array > 0).astype(np.uint8), native_labels.affine),
        anomaly_map_mni=nib.Nifti1Image(detection.anomaly.astype(np.float32), mni),
        segmentation_mni=nib.Nifti1Image((detection.segmentation > 0).astype(np.uint8), mni),
        lesions=lesions,
        scan_score=detection.scan_score,
        scan_percentile=detection.scan_percentile,
        threshold=detection.threshold,
        extent=detection.extent,
        model={
            "name": str(model) if not isinstance(model, TrainedModel) else str(trained.run_dir),
            "weights_sha256": trained.weights_sha256,
        },
        warnings=list(case.record.get("warnings", [])),
    )
