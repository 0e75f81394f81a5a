"""Voxel-wise statistics of a healthy cohort on the crop grid: the one place the cohort mean and spread are computed.

Used by the mean-skip autoencoder (its starting point), the normative model (its whole content) and the
learned-nothing guard (the reference a model must beat). Pure NumPy on ``(n, *shape)`` arrays.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Centre = Literal["median", "mean"]

#: MAD × 1.4826 estimates the standard deviation of normally distributed data.
MAD_TO_SD = 1.4826


def _members(volumes: np.ndarray, indices: list[int] | None) -> list[int] | slice:
    if volumes.ndim < 2 or volumes.shape[0] < 1 or (indices is not None and not len(indices)):
        raise ValueError("cohort statistics need an (n, *shape) array with n >= 1 (and at least one index)")
    return slice(None) if indices is None else list(indices)


def cohort_mean(volumes: np.ndarray, indices: list[int] | None = None) -> np.ndarray:
    """The voxel-wise mean image of ``volumes`` (``(n, *shape)``; only rows ``indices`` when given), float32."""
    rows = _members(volumes, indices)
    out = np.empty(volumes.shape[1:], dtype=np.float32)
    for i in range(volumes.shape[1]):  # slab by slab, as in cohort_centre_spread
        out[i] = np.asarray(volumes[rows, i], dtype=np.float32).mean(axis=0, dtype=np.float64)
    return out


def cohort_centre_spread(
    volumes: np.ndarray, centre: Centre = "median", floor: float = 0.02, indices: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-wise centre and spread of a cohort.

    Args:
        volumes: ``(n, *shape)`` healthy volumes on one grid (a memory map is fine: it is read one slab at a time).
        centre: ``median`` (spread = 1.4826 × median absolute deviation, robust to a few odd scans) or ``mean``
            (spread = standard deviation).
        floor: Lower bound of the spread (on the 0…1 intensity scale), so that z-scores stay finite where every
            scan agrees (background) or the cohort is tiny.
        indices: Only these rows of ``volumes`` (the training split of a cache).

    Returns:
        ``(centre, spread)``, float32 arrays of the volume shape.
    """
    if centre not in ("median", "mean"):
        raise ValueError(f"unknown centre {centre!r}")
    rows = _members(volumes, indices)
    middle = np.empty(volumes.shape[1:], dtype=np.float32)
    spread = np.empty(volumes.shape[1:], dtype=np.float32)
    for i in range(volumes.shape[1]):  # one slab at a time: a large cohort never sits in memory whole
        slab = np.asarray(volumes[rows, i], dtype=np.float32)
        if centre == "median":
            middle[i] = np.median(slab, axis=0)
            spread[i] = MAD_TO_SD * np.median(np.abs(slab - middle[i]), axis=0)
        else:
            middle[i] = slab.mean(axis=0, dtype=np.float64)
            spread[i] = slab.std(axis=0, dtype=np.float64)
    return middle, np.maximum(spread, np.float32(floor))


def masked_mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared difference of two volumes inside ``mask`` (NaN when the mask is empty)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    diff = np.asarray(a, dtype=np.float32)[mask] - np.asarray(b, dtype=np.float32)[mask]
    return float(np.mean(diff * diff))


def nearest_mse(volume: np.ndarray, mask: np.ndarray, cohort: np.ndarray, indices: list[int] | None = None) -> float:
    """The MSE inside ``mask`` between ``volume`` and the closest cohort member (an oracle reference)."""
    mask = np.asarray(mask, dtype=bool)
    target = np.asarray(volume, dtype=np.float32)[mask]
    rows = list(range(cohort.shape[0])) if indices is None else list(indices)
    best = float("inf")
    for start in range(0, len(rows), 16):  # a few members at a time: bounded memory for large cohorts
        chunk = np.asarray(cohort[rows[start : start + 16]], dtype=np.float32)[:, mask]
        best = min(best, float(((chunk - target) ** 2).mean(axis=1).min()))
    return best
