"""From residual to findings: median filter, eroded brain mask, threshold, 3D connected components, slice scores.

All functions take and return numpy arrays on the MNI crop grid; axis 2 is axial (inferior → superior).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from brainuad.config import PostprocessConfig

AXIAL = 2


@dataclass(frozen=True)
class PostprocessingSizes:
    """The post-processing sizes in voxels for one grid spacing."""

    median_size: int
    erosion_voxels: int
    min_component_voxels: int

    def to_dict(self) -> dict:
        return asdict(self)


def postprocessing_sizes(spacing_mm: float, config: PostprocessConfig | None = None) -> PostprocessingSizes:
    """Voxel sizes of the post-processing ``config`` (default: the paper's) on a ``spacing_mm`` grid: 5 / 2 / 20 at
    1 mm, 3 / 1 / 3 at 2 mm."""
    config = config or PostprocessConfig()
    median = max(1, round(config.median_mm / spacing_mm))
    median += 1 - median % 2  # odd
    return PostprocessingSizes(
        median,
        max(0, round(config.erosion_mm / spacing_mm)),
        max(1, math.ceil(config.min_component_mm3 / spacing_mm**3)),
    )


def median_filter_3d(
    volume: np.ndarray,
    size: int = 5,
    mask: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    chunk: int = 1 << 17,
) -> np.ndarray:
    """Exact ``size``³ median filter (edges replicated, like ``scipy.ndimage.median_filter(mode="nearest")``).

    Only voxels inside ``mask`` are computed (the rest are 0): the anomaly map is masked afterwards anyway, and the
    brain is under half of the crop. Runs on ``device`` — on a GPU this takes milliseconds.
    """
    if size % 2 != 1:
        raise ValueError("median filter size must be odd")
    half = size // 2
    device = torch.device(device)
    values = torch.as_tensor(np.ascontiguousarray(volume), dtype=torch.float32, device=device)
    padded = torch.nn.functional.pad(values[None, None], (half,) * 6, mode="replicate")[0, 0]
    where = torch.as_tensor(mask if mask is not None else np.ones(volume.shape, bool), device=device)
    centres = torch.nonzero(where)  # (n, 3) indices into the unpadded volume = window corners in the padded one
    offsets = torch.stack(torch.meshgrid(*[torch.arange(size, device=device)] * 3, indexing="ij"), dim=-1).reshape(
        -1, 3
    )
    strides = torch.tensor(padded.stride(), device=device)
    flat = padded.reshape(-1)
    offset_index = (offsets * strides).sum(-1)
    out = torch.zeros_like(values)
    for start in range(0, centres.shape[0], chunk):
        block = centres[start : start + chunk]
        base = (block * strides).sum(-1)
        windows = flat[base[:, None] + offset_index[None, :]]
        out[block[:, 0], block[:, 1], block[:, 2]] = windows.median(dim=1).values
    return out.cpu().numpy()


def erode_mask(mask: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Shrink the brain mask by ``iterations`` voxels (drops the bright rim that skull stripping and registration
    leave at the brain's edge)."""
    if iterations <= 0:
        return mask.astype(bool)
    return ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), iterations=iterations)


def anomaly_map(
    image: np.ndarray,
    reconstruction: np.ndarray,
    brain_mask: np.ndarray,
    median_size: int = 5,
    erosion: int = 2,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The paper's post-processed anomaly map: |x − x̂| → median filter → × slightly eroded brain mask."""
    if image.shape != reconstruction.shape or image.shape != brain_mask.shape:
        raise ValueError(
            f"shapes differ: image {image.shape}, reconstruction {reconstruction.shape}, mask {brain_mask.shape}"
        )
    residual = np.abs(image.astype(np.float32) - reconstruction.astype(np.float32))
    eroded = erode_mask(brain_mask, erosion)
    if median_size > 1:
        residual = median_filter_3d(residual, median_size, mask=eroded, device=device)
    return np.where(eroded, residual, 0.0).astype(np.float32)


def healthy_spread(
    maps: list[np.ndarray], brains: list[np.ndarray], smooth_voxels: float = 2.0, floor_fraction: float = 0.25
) -> np.ndarray:
    """The voxel-wise spread of healthy anomaly maps, to divide new maps by (``calibrate --normalise-residual``).

    The root mean square over the healthy scans at each voxel (an anomaly map is a magnitude, so its spread is taken
    around zero), Gaussian-smoothed because a few scans give a noisy estimate — inside the brain only (a normalised
    convolution), so the zeros outside do not pull the brain's edge down — and floored at ``floor_fraction`` of the
    brain's median, so that voxels healthy scans never lit up (or that lie outside every healthy brain) do not turn
    noise into findings.
    """
    stack = np.stack([np.asarray(m, np.float32) for m in maps]).astype(np.float64)
    inside = np.logical_or.reduce([np.asarray(b, bool) for b in brains]) & (stack > 0).any(0)
    rms = np.sqrt((stack**2).mean(0)) * inside
    if smooth_voxels > 0:
        weight = ndimage.gaussian_filter(inside.astype(np.float64), smooth_voxels)
        rms = np.where(inside, ndimage.gaussian_filter(rms, smooth_voxels) / np.maximum(weight, 1e-12), 0.0)
    floor = max(floor_fraction * float(np.median(rms[inside])) if inside.any() else 0.0, 1e-6)
    return np.maximum(rms, floor).astype(np.float32)


def segment(
    anomaly: np.ndarray, threshold: float, min_voxels: int = 20, extent: float | None = None
) -> tuple[np.ndarray, int]:
    """Threshold, then keep 26-connected components of at least ``min_voxels`` voxels.

    With ``extent`` (below ``threshold``): hysteresis, as in Canny's edges — a finding needs evidence at the strict
    ``threshold`` (its seed), and its extent is the connected region above ``extent`` around that seed. No seed, no
    finding: the lower level adds no finding of its own, it only delineates the ones the strict level found.

    Returns:
        The component labels (0 = background, 1…n) and n.
    """
    import cc3d

    binary = anomaly > threshold
    if extent is not None and extent < threshold:
        grown = cc3d.connected_components(anomaly > extent, connectivity=26)
        seeds = np.unique(grown[binary])
        binary = np.isin(grown, seeds[seeds > 0])
    if min_voxels > 1:
        binary = cc3d.dust(binary, threshold=min_voxels, connectivity=26, in_place=False)
    labels, count = cc3d.connected_components(binary, connectivity=26, return_N=True)
    return labels.astype(np.int32), int(count)


def slice_errors(anomaly: np.ndarray, axis: int = AXIAL) -> np.ndarray:
    """e(u): the summed anomaly in each slice along ``axis`` (axial by default)."""
    other = tuple(a for a in range(anomaly.ndim) if a != axis)
    return anomaly.sum(axis=other, dtype=np.float64)


def slice_percentile(anomaly: np.ndarray, region: np.ndarray, q: float = 99.0, axis: int = AXIAL) -> np.ndarray:
    """The ``q``-th percentile of the anomaly over each slice's ``region`` voxels (0 where a slice has none).

    A level, not a sum: a slice's score does not grow with its brain area, only with how high its residual reaches.
    """
    anomaly, region = np.moveaxis(np.asarray(anomaly), axis, 0), np.moveaxis(np.asarray(region, bool), axis, 0)
    if anomaly.shape != region.shape:
        raise ValueError(f"anomaly {anomaly.shape} and region {region.shape} differ in shape")
    return np.array([float(np.percentile(a[m], q)) if m.any() else 0.0 for a, m in zip(anomaly, region)])


def slice_means(anomaly: np.ndarray, region: np.ndarray, axis: int = AXIAL) -> np.ndarray:
    """The mean anomaly over each slice's ``region`` voxels (0 where a slice has none): e(u) / brain area."""
    other = tuple(a for a in range(anomaly.ndim) if a != axis)
    region = np.asarray(region, bool)
    total = np.where(region, anomaly, 0.0).sum(axis=other, dtype=np.float64)
    return total / np.maximum(region.sum(axis=other), 1)


def segmented_area(segmentation: np.ndarray, voxel_ml: float = 0.001, axis: int = AXIAL) -> np.ndarray:
    """The final segmentation's volume in each slice (mL): grows with the finding, not with the brain."""
    other = tuple(a for a in range(segmentation.ndim) if a != axis)
    return (np.asarray(segmentation) > 0).sum(axis=other).astype(np.float64) * voxel_ml


def normality_scores(errors: np.ndarray) -> np.ndarray:
    """The paper's slice normality score s(u) = 1 − (e(u) − min e) / (max e − min e); near 0 = likely abnormal.

    Per-volume min–max: every volume gets a slice at 0 and one at 1 whether or not it holds an anomaly, so these
    scores rank slices within a scan only. When all slices have the same error, none stands out: all scores are 1.
    """
    errors = np.asarray(errors, dtype=np.float64)
    spread = errors.max() - errors.min() if errors.size else 0.0
    if spread <= 0:
        return np.ones_like(errors)
    return 1.0 - (errors - errors.min()) / spread


def calibrated_slice_scores(errors: np.ndarray, healthy_mean: np.ndarray, healthy_std: np.ndarray) -> np.ndarray:
    """Slice errors as z-scores against healthy scans' errors at the same slice: comparable across scans."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.shape != np.shape(healthy_mean) or errors.shape != np.shape(healthy_std):
        raise ValueError("healthy reference does not match the number of slices")
    return (errors - healthy_mean) / np.maximum(healthy_std, 1e-8)


def describe_lesions(
    labels: np.ndarray,
    anomaly: np.ndarray,
    mni_affine: np.ndarray,
    native_labels: np.ndarray | None = None,
    native_affine: np.ndarray | None = None,
) -> list[dict]:
    """One row per segmented component (a "lesion"), largest first.

    Args:
        labels: Component labels on the MNI crop grid (0 = background, 1…n), from :func:`segment`.
        anomaly: The anomaly map the components were thresholded from (same grid): peak and mean score.
        mni_affine: The crop grid's voxel → MNI mm affine.
        native_labels: The same labels mapped onto the scan's own grid (nearest neighbour), if known.
        native_affine: That grid's voxel → scanner mm (RAS+) affine.

    Returns:
        Dicts with ``id`` (the label), ``volume_ml_native`` (voxels in the scan's own grid × its voxel volume; ``None``
        without ``native_labels``), ``volume_ml_mni``, ``centroid_mni_mm``, ``centroid_native_mm`` (scanner
        coordinates; ``None`` without native labels or when the component vanishes at the native resolution),
        ``peak_score`` and ``mean_score`` (the anomaly map inside the component, on the 0…1 intensity scale).
    """
    labels = np.asarray(labels)
    ids = [int(i) for i in np.unique(labels) if i > 0]
    if not ids:
        return []
    index = np.arange(1, max(ids) + 1)
    mni_ml = abs(np.linalg.det(np.asarray(mni_affine)[:3, :3])) / 1000
    counts = ndimage.sum_labels(np.ones(labels.shape), labels, index)
    centroids = ndimage.center_of_mass(np.ones(labels.shape), labels, index)
    peaks = ndimage.maximum(anomaly, labels, index)
    means = ndimage.mean(anomaly, labels, index)
    native_counts = native_centroids = None
    if native_labels is not None and native_affine is not None:
        native_ml = abs(np.linalg.det(np.asarray(native_affine)[:3, :3])) / 1000
        native_counts = ndimage.sum_labels(np.ones(native_labels.shape), native_labels, index)
        native_centroids = ndimage.center_of_mass(np.ones(native_labels.shape), native_labels, index)

    def world(affine: np.ndarray, voxel) -> list[float]:
        return [round(float(v), 1) for v in np.asarray(affine)[:3, :3] @ np.asarray(voxel) + np.asarray(affine)[:3, 3]]

    rows = []
    for i in ids:
        k = i - 1
        row = {
            "id": i,
            "volume_ml_native": None,
            "volume_ml_mni": float(counts[k] * mni_ml),
            "centroid_native_mm": None,
            "centroid_mni_mm": world(mni_affine, centroids[k]),
            "peak_score": float(peaks[k]),
            "mean_score": float(means[k]),
        }
        if native_counts is not None:
            row["volume_ml_native"] = float(native_counts[k] * native_ml)
            if native_counts[k] > 0:
                row["centroid_native_mm"] = world(native_affine, native_centroids[k])
        rows.append(row)
    return sorted(rows, key=lambda r: -(r["volume_ml_native"] or r["volume_ml_mni"]))
