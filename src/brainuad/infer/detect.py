"""``brainuad detect``: raw scans in, findings out — in the scan's own space and in MNI crop space.

For each scan ``DIR/<name>/`` holds ``anomaly_map``, ``reconstruction`` and ``segmentation`` (``.nii.gz``) on the
input's grid (same shape, affine and voxel order, so they overlay in ITK-SNAP or 3D Slicer), the same three under
``mni/``, ``slice_scores.csv`` and ``summary.json``. Each folder is built under a temporary name and renamed into
place when complete, so a killed batch never leaves a folder that a re-run would trust.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import torch

from brainuad.config import PostprocessConfig, PreprocessConfig, replace, to_dict
from brainuad.errors import BrainuadError, InputError
from brainuad.infer.inference import Detection
from brainuad.infer.trained import TrainedModel
from brainuad.io.files import folder_lock, output_folder
from brainuad.io.provenance import provenance, sha256_file
from brainuad.io.shards import Shard
from brainuad.io.volumes import (
    Volume,
    atomic_folder,
    check_replaceable,
    find_nifti_files,
    load_volume,
    read_json,
    save_volume,
    write_json,
)
from brainuad.preprocess.cases import PreprocessedCase, case_names
from brainuad.preprocess.pipeline import BatchResult, DegradedInputWarning, _remove_stale_partials, preprocess_volume
from brainuad.preprocess.qc import check_memory, contrast_warning, strong_contrast_mismatch

OUTPUTS = (
    "anomaly_map.nii.gz",
    "reconstruction.nii.gz",
    "segmentation.nii.gz",
    "slice_scores.csv",
    "summary.json",
    "report.html",
)
#: What a findings folder of an older brainuad (before the ownership marker) held: such a folder may be replaced.
LEGACY_OUTPUTS = (*OUTPUTS, "mni", "figure_rows.png", "figure_slice_scores.png")


def nearest_native_slices(detection: Detection) -> list[int]:
    """For each axial MNI slice, the nearest slice index along the input file's own most-superior axis."""
    case = detection.case
    transform, grid = case.transform, case.grid
    native_axcodes = transform.native_axcodes
    axis = next(i for i, c in enumerate(native_axcodes) if c in ("S", "I"))
    ras_axis = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    ras_index = ras_axis[native_axcodes[axis]]
    flip = native_axcodes[axis] == "I"
    size = transform.native_shape[ras_index]
    centre = (np.asarray(grid.shape) - 1) / 2
    to_native_voxel = np.linalg.inv(transform.native_affine) @ transform.mni_to_native @ grid.affine_array
    indices = []
    for u in range(grid.shape[2]):
        voxel = to_native_voxel @ np.array([centre[0], centre[1], u, 1.0])
        index = int(np.clip(np.rint(voxel[ras_index]), 0, size - 1))
        indices.append(size - 1 - index if flip else index)
    return indices


def mni_z_mm(detection: Detection) -> list[float]:
    """Each axial slice's MNI z coordinate in mm."""
    affine = detection.case.grid.affine_array
    return [float(affine[2, 2] * u + affine[2, 3]) for u in range(detection.case.grid.shape[2])]


def _write_slice_table(path: Path, detection: Detection, native: list[int], z_mm: list[float]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mni_slice", "mni_z_mm", "native_slice", "summed_error", "normality_score", "calibrated_z"])
        for u, (e, s) in enumerate(zip(detection.slice_errors, detection.normality)):
            z = "" if detection.calibrated is None else f"{detection.calibrated[u]:.4f}"
            writer.writerow([u, f"{z_mm[u]:g}", native[u], f"{e:.6g}", f"{s:.6f}", z])


def figure_slices(segmentation: np.ndarray, normality: np.ndarray, brain: np.ndarray, rows: int = 3) -> list[int]:
    """The axial slices the figure shows: first the slice through the largest finding (where it has most voxels),
    then that of the second largest, then the most abnormal brain slices (lowest normality) not next to those.

    Ranking by slice score alone showed skull-base slices of the demo's glioma case while the glioma was not shown.
    """
    chosen: list[int] = []
    labels = np.asarray(segmentation)
    if labels.any():
        if labels.max() <= 1:  # a binary mask: number its components
            from scipy import ndimage

            labels, _ = ndimage.label(labels > 0)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        for component in np.argsort(sizes)[::-1][: rows - 1]:
            if sizes[component] == 0:
                break
            per_slice = (labels == component).sum(axis=(0, 1))
            u = int(np.argmax(per_slice))
            if u not in chosen:
                chosen.append(u)
    brain_slices = set(np.flatnonzero(brain.any(axis=(0, 1))).tolist())
    for u in np.argsort(normality, kind="stable"):
        if len(chosen) >= rows:
            break
        if int(u) in brain_slices and all(abs(int(u) - c) > 2 for c in chosen):
            chosen.append(int(u))
    return sorted(chosen)


def _write_figures(staging: Path, detection: Detection, native: list[int], z_mm: list[float]) -> None:
    from brainuad.report.figures import plot_detection_rows, plot_slice_scores

    ranked = figure_slices(detection.segmentation, detection.normality, detection.case.brain_mask.array)
    plot_detection_rows(
        detection.case.image.array,
        detection.reconstruction,
        detection.anomaly,
        detection.segmentation,
        ranked,
        staging / "figure_rows.png",
        slice_labels=[f"MNI z {z_mm[u]:+.0f} mm\nnative slice {native[u]}" for u in ranked],
        threshold=detection.threshold,
        affine=detection.case.grid.affine_array,
        extent=detection.extent,
    )
    plot_slice_scores(detection.normality, staging / "figure_slice_scores.png", detection.calibrated, z_mm)


def learned_nothing_warning(run_dir: Path) -> str | None:
    """The run's own verdict when its model did not beat the healthy mean image (``summary.json``), else ``None``."""
    from brainuad.train.guard import read_check, report_warning

    return report_warning(read_check(run_dir, strict=False))


#: The lesion table's columns: a finding's key in ``summary.json`` → its header.
LESION_COLUMNS = {
    "id": "lesion",
    "volume_ml_native": "volume (mL, native)",
    "centroid_native_mm": "centroid, scanner mm (x, y, z)",
    "centroid_mni_mm": "centroid, MNI mm (x, y, z)",
    "peak_score": "peak score",
    "mean_score": "mean score",
}


def lesion_section(lesions: list[dict], scan: str | None = None) -> dict[str, str]:
    """A report section listing a scan's findings, for detect's report and the demo's top report.

    Args:
        lesions: The ``lesions`` records of a findings folder's ``summary.json`` (largest first).
        scan: The scan's name, put in the heading where a page shows several scans.

    Returns:
        ``{heading: HTML table}``, as :func:`brainuad.report.html.html_report` takes its ``sections``.
    """
    from brainuad.report.html import records_table_html

    heading = f"Lesions ({len(lesions)} components, largest first)"
    if scan is not None:
        heading = f"{scan}: l{heading[1:]}"
    table = records_table_html(lesions, LESION_COLUMNS) if lesions else "<p>No component above the threshold.</p>"
    return {heading: table}


def _write_report(staging: Path, name: str, summary: dict, warning: str | None) -> None:
    import html

    from brainuad.report.html import html_report

    calibration = summary.get("calibration") or {}
    notes = [
        f"Segmentation threshold <b>{summary['threshold']:.4g}</b> ({html.escape(str(summary['threshold_source']))})"
        " — the one used for the segmentation panels, the lesion table and the volumes."
        + (
            f" Each finding is delineated down to the extent level <b>{summary['extent_threshold']:.4g}</b> "
            f"({html.escape(str(summary.get('extent_source')))}): a finding needs a voxel above the threshold, and "
            "extends over the connected voxels above the extent level (hysteresis)."
            if summary.get("extent_threshold") is not None
            else ""
        ),
        "Images are axial slices of the MNI crop in neurological view (the patient's right on the right, "
        "marked R/L and A/P); rows are labelled by MNI z in mm and the nearest slice of the input file.",
    ]
    percentile = summary.get("scan_score_percentile_vs_healthy")
    notes.append(
        f"Scan triage: scan score <b>{summary['scan_score']:.4g}</b> (99.9th percentile of the anomaly map in the "
        + (f"brain), higher than <b>{percentile:.0f} %</b> of the healthy calibration scans."
           if percentile is not None else "brain); no percentile among healthy scans ("
           + ("the healthy reference is simulated)." if calibration.get("simulated_reference")
              else "too few or no healthy calibration scans)."))
    )  # fmt: skip
    if calibration.get("calibrated_on"):
        notes.append(
            "Healthy reference (calibrated z, scan percentile): "
            + html.escape(str(calibration["calibrated_on"]))
            + "".join(f"; <b>{html.escape(n)}</b>" for n in calibration.get("notes", []))
            + "."
        )
    html_report(
        f"brainuad findings: {name}",
        {k: v for k, v in summary.items() if k != "provenance"},
        {
            "Axial slices through the largest findings and the most abnormal slices: input, reconstruction, anomaly "
            "heatmap, segmentation (MNI crop)": staging / "figure_rows.png",
            "Normality score s(u) per axial slice (0 = most abnormal) and calibrated z vs healthy scans": staging
            / "figure_slice_scores.png",
        },
        staging / "report.html",
        notes=notes,
        banner=html.escape(warning) if warning else None,
        sections=lesion_section(summary["lesions"]),
    )


def write_detection(
    detection: Detection,
    folder: Path,
    input_volume: Volume,
    trained: TrainedModel,
    settings: dict | None = None,
    threshold_source: str | None = None,
) -> Path:
    """Write one scan's outputs (native and MNI) into ``folder`` atomically.

    ``settings`` (input hash, threshold, weights, preprocessing) go into ``summary.json`` so a re-run knows whether
    this result still holds; the run's calibration and ``threshold_source`` describe the result in the summary and
    the report.
    """
    from brainuad.infer.postprocessing import describe_lesions

    case = detection.case
    native_slices = nearest_native_slices(detection)
    z_mm = mni_z_mm(detection)
    native_labels = case.to_native(detection.segmentation, order=0)
    lesions = describe_lesions(
        detection.segmentation, detection.anomaly, case.grid.affine_array, native_labels.array, native_labels.affine
    )
    with atomic_folder(folder, LEGACY_OUTPUTS) as staging:
        (staging / "mni").mkdir()
        low, high = case.record.get("intensity_range", [0.0, 1.0])
        # Reconstruction back in the input's intensity units, so it can be compared with the scan directly.
        reconstruction_units = (low + detection.reconstruction * (high - low)) * case.brain_mask.array
        maps = {
            "anomaly_map.nii.gz": (detection.anomaly, 1, np.float32),
            "reconstruction.nii.gz": (reconstruction_units.astype(np.float32), 1, np.float32),
            "segmentation.nii.gz": ((detection.segmentation > 0).astype(np.uint8), 0, np.uint8),
        }
        protect = (input_volume.path,) if input_volume.path else ()
        for name, (array, order, dtype) in maps.items():
            save_volume(Volume(array, case.grid.affine_array), staging / "mni" / name, dtype=dtype, mni=True)
            native = case.to_native(array, order=order)
            # Same geometry as the input file: its header, affine and voxel order.
            native = Volume(native.array, input_volume.affine, input_volume.source_axcodes, input_volume.header)
            save_volume(native, staging / name, dtype=dtype, protect=protect)
        _write_slice_table(staging / "slice_scores.csv", detection, native_slices, z_mm)
        _write_figures(staging, detection, native_slices, z_mm)
        summary = {
            "input": _portable_input(case.record.get("input"), folder),
            "scan_score": detection.scan_score,
            "scan_score_definition": "99.9th percentile of the post-processed anomaly map inside the brain",
            "scan_score_percentile_vs_healthy": detection.scan_percentile,
            "threshold": detection.threshold,
            "threshold_source": threshold_source or "given",
            "extent_threshold": detection.extent,
            "extent_source": _extent_source(trained) if detection.extent is not None else None,
            "calibration": _calibration_summary(trained),
            "lesion_count": detection.components,
            "lesion_volume_ml_native": float(sum(r["volume_ml_native"] for r in lesions)),
            "lesion_volume_ml_mni": float(sum(r["volume_ml_mni"] for r in lesions)),
            # One record per component (postprocessing.describe_lesions), largest first.
            "lesions": lesions,
            "most_abnormal_mni_slices": [int(u) for u in np.argsort(detection.normality)[:5]],
            # Named without an absolute path: builtin:NAME@VERSION+SHA, or the run folder relative to this folder.
            "model": {
                "name": trained.name(folder),
                "weights_sha256": trained.weights_sha256,
                "calibration_sha256": trained.calibration_sha256,
            },
            "preprocessing": {
                k: case.record.get(k) for k in ("preprocessing", "skull_strip_method", "qc", "grid", "warnings")
            },
            "settings": settings,
            "provenance": provenance(),
        }
        write_json(staging / "summary.json", summary)
        _write_report(staging, folder.name, summary, trained.report_warning)
    return folder


def _portable_input(record: dict | None, folder: Path) -> dict | None:
    """The scan's input record with its path relative to the findings ``folder`` (no absolute path of this machine;
    the content hash, which tells a re-run whether the scan changed, is kept)."""
    if not isinstance(record, dict) or not record.get("path"):
        return record
    from brainuad.io.portable import relative_path

    return {**record, "path": relative_path(record["path"], folder)}


def _extent_source(trained: TrainedModel) -> str:
    """How the calibration's extent level was chosen, in words."""
    calibration = trained.calibration
    dice = calibration.extent_tuning_dice
    return (
        f"calibration.json ({calibration.extent_method}"
        + (f"; pooled Dice {dice:.3f} on {len(calibration.extent_tuning_cases or ())} tuning cases" if dice else "")
        + ")"
    )


def _calibration_summary(trained: TrainedModel) -> dict | None:
    """What the findings say about the healthy reference: what it was fitted on, and its caveats."""
    calibration = trained.calibration
    if calibration is None:
        return None
    notes = None if calibration.notes is None else list(calibration.notes)
    if calibration.reference_note:
        notes = [*(notes or []), calibration.reference_note]
    summary = {
        "calibrated_on": calibration.calibrated_on,
        "notes": notes,
        "simulated_reference": calibration.simulated_reference,
    }
    if calibration.residual_spread:
        summary["anomaly_map_divided_by"] = (
            f"the healthy voxel-wise spread {calibration.residual_spread} (calibrate --normalise-residual): the map "
            "and the threshold are in multiples of what healthy scans show at each voxel"
        )
    return summary


def detect_batch(
    inputs: list[str | Path],
    run_dir: str | Path,
    out_dir: str | Path,
    threshold: float | None = None,
    skull_strip: str | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    threshold_source: str | None = None,
    shard: Shard | None = None,
    names: dict[Path, str] | None = None,
    allow_contrast_mismatch: bool = False,
    orientation: str | None = None,
) -> BatchResult:
    """Detect anomalies in raw scans (files or folders); finished scans are skipped, failures do not stop the batch.

    Args:
        inputs: NIfTI files or folders.
        run_dir: Trained model folder (``brainuad train`` output, calibrated or not), or ``builtin:NAME``.
        out_dir: Output folder (one sub-folder per scan).
        threshold: Segmentation threshold; ``None`` = the calibrated one.
        skull_strip: Override the model's skull-strip setting (e.g. ``none`` for BraTS).
        device: ``auto``, ``cpu`` or ``cuda``.
        force: Redo scans whose outputs are complete.
        progress: Show a progress bar.
        threshold_source: Where a given ``threshold`` came from, for the summary and the report.
        shard: Do only this shard of the scans (:mod:`brainuad.io.shards`; names are decided on all of them).
        names: Output folder name of each input file (default: from the file names, see ``case_names``).
        allow_contrast_mismatch: Run on a scan whose contrast strongly differs from the model's healthy scans
            (refused by default: every voxel would look anomalous).
        orientation: The voxel orientation of scans whose header has none (refused without it).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    # Fails before loading anything, naming the folder; a refused run leaves no empty folder behind.
    with output_folder(out_dir):
        trained = TrainedModel.load(run_dir, device)
        threshold, source = trained.threshold(threshold, threshold_source or "given", "pass --threshold VALUE")
        config = trained.config
        preprocess_config: PreprocessConfig = config.preprocessing
        if skull_strip:
            preprocess_config = replace(preprocess_config, skull_strip=skull_strip)
        paths = find_nifti_files(inputs)
        names = names or case_names(paths)
        if shard is not None:
            paths = shard.take({p: names[p] for p in paths})
        _remove_stale_partials(out_dir)
        common = {
            "threshold": threshold,
            "weights_sha256": trained.weights_sha256,
            "preprocessing": to_dict(preprocess_config),
            # Outputs are bit-identical for one thread count; another count may change the map's last bits
            # (summation order), so a result made with another count is recomputed, never reused (README).
            "torch_threads": torch.get_num_threads(),
        }
        if config.postprocessing != PostprocessConfig():
            # Recorded when not the paper's, so findings made with other sizes are never reused (and those made before
            # the setting existed, with the paper's sizes, still are).
            common["postprocessing"] = to_dict(config.postprocessing)
        if orientation is not None:
            common["assumed_orientation"] = orientation  # recorded only when given: older findings are still reused
        extent = trained.extent(threshold)
        if extent is not None:
            common["extent"] = extent  # recorded only when used: findings without it stay valid
        if trained.calibration is not None and trained.calibration.residual_spread_sha256:
            # Maps divided by a healthy spread are another map: never reuse findings made without it (or with another).
            common["residual_spread_sha256"] = trained.calibration.residual_spread_sha256
        result = BatchResult()
        for path in tqdm(paths, desc="detect", unit="scan", disable=not progress):
            folder = out_dir / names[path]
            try:
                # Two runs into the same folder at once take turns; the second then reuses the first one's result.
                with folder_lock(folder):
                    outcome = _detect_one(
                        path,
                        folder,
                        trained,
                        preprocess_config,
                        threshold,
                        source,
                        common,
                        force,
                        allow_contrast_mismatch,
                    )
                (result.skipped if outcome == "skipped" else result.done).append(folder)
            except BrainuadError as exc:
                result.failed.append((path, str(exc)))
            except Exception as exc:  # keep the batch going; report the unexpected error with its file
                result.failed.append((path, str(InputError(path, f"unexpected {type(exc).__name__}: {exc}"))))
        return result


def check_case_for_model(
    case: PreprocessedCase, trained: TrainedModel, path: str | Path, allow_contrast_mismatch: bool = False
) -> None:
    """Refuse a preprocessed scan the model cannot read: another crop grid, or a contrast far from its calibration
    scans' (CSF / white-matter ratio); a milder mismatch is a warning, recorded in the case's warnings.

    Raises:
        InputError: Naming ``path``.
    """
    trained.check_case(case, path)
    calibration = trained.calibration
    ratio = case.record.get("qc", {}).get("csf_to_white_matter")
    reference = calibration.csf_to_white_matter if calibration else None
    if not allow_contrast_mismatch and strong_contrast_mismatch(ratio, reference):
        raise InputError(
            path,
            contrast_warning(ratio, reference)[0].removeprefix("QC: ")
            + "; refusing it (use a model of this contrast, or pass --allow-contrast-mismatch to run anyway)",
        )
    for message in contrast_warning(ratio, reference):
        case.record["warnings"].append(message)
        warnings.warn(f"{path}: {message}", DegradedInputWarning, stacklevel=3)


def _detect_one(
    path: Path,
    folder: Path,
    trained: TrainedModel,
    preprocess_config: PreprocessConfig,
    threshold: float,
    source: str,
    common: dict,
    force: bool,
    allow_contrast_mismatch: bool = False,
) -> str:
    """Detect in one scan into ``folder``; ``"skipped"`` when a finished result made with these settings is there."""
    # A finished result is reused only when it was made from this very file with these settings.
    settings = {"input_sha256": sha256_file(path), **common}
    if not force and _finished(folder, settings):
        return "skipped"
    check_replaceable(folder, LEGACY_OUTPUTS)  # before the work: a user's folder is never replaced
    check_memory(path)  # from the header, before reading the voxels
    volume = load_volume(path, "image", orientation=common.get("assumed_orientation"))
    case = preprocess_volume(volume, preprocess_config, name=folder.name)
    check_case_for_model(case, trained, path, allow_contrast_mismatch)
    calibration = trained.calibration
    if calibration is not None and calibration.reference_note:
        warnings.warn(f"{path}: note: {calibration.reference_note}", DegradedInputWarning, stacklevel=3)
    detection = trained.detect(case, threshold)
    write_detection(detection, folder, volume, trained, settings, source)
    return "done"


def _finished(folder: Path, settings: dict) -> bool:
    """Whether ``folder`` holds complete findings made with exactly these settings (input hash included)."""
    if not all((folder / n).is_file() for n in OUTPUTS):
        return False
    try:
        return read_json(folder / "summary.json").get("settings") == settings
    except (BrainuadError, AttributeError):
        return False
