"""Lesion-level detection over thresholds: the FROC curve (lesion sensitivity against false-positive components per
scan), and the operating point chosen on the tuning cases for a budget of false alarms.

The hit rule is :func:`brainuad.evaluate.metrics.match_lesions`' (a component hits a lesion when their overlap is at
least 10 % of the component). Each threshold segments the anomaly map as ``detect`` does (components smaller than
the minimum component size dropped); reference lesions below that size are not counted, since nothing that small
can be reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from brainuad.evaluate import metrics

#: Thresholds of the curve as factors on the operating threshold: geometric, from far more sensitive (hundreds of
#: false positives) to far more specific than it.
THRESHOLD_FACTORS = tuple(float(f) for f in np.geomspace(0.3, 4.0, 31))
#: The budget of false-positive components per scan an operating point is chosen for (on the tuning cases).
TARGET_FALSE_POSITIVES = 3.0
#: Lesions at least this large (mL) are reported apart: the issue's sensitivity target is for them.
LARGE_LESION_ML = 1.0


@dataclass
class FrocCounts:
    """One case's detections at each threshold of a curve.

    Attributes:
        thresholds: The thresholds (shared by every case of a curve).
        detected: ``(thresholds, lesions)``: whether each reference lesion is detected at each threshold.
        lesion_ml: Volume of each reference lesion (mL, crop grid).
        false_positives: ``(thresholds,)`` components hitting no lesion.
    """

    thresholds: np.ndarray
    detected: np.ndarray
    lesion_ml: np.ndarray
    false_positives: np.ndarray


def thresholds_around(threshold: float) -> np.ndarray:
    """The curve's thresholds for an operating ``threshold``."""
    return np.asarray([threshold * f for f in THRESHOLD_FACTORS], np.float64)


def case_counts(
    anomaly: np.ndarray, lesion: np.ndarray, thresholds: Sequence[float], min_component_voxels: int, voxel_ml: float
) -> FrocCounts:
    """Segment ``anomaly`` at each threshold and match the components to ``lesion``'s 26-connected lesions."""
    from brainuad.infer.postprocessing import segment

    reference, count = segment(np.asarray(lesion, np.float32), 0.5, min_component_voxels)
    sizes = np.bincount(reference.ravel(), minlength=count + 1)[1:] * voxel_ml
    detected, false_positives = [], []
    for threshold in thresholds:
        labels, predicted = segment(anomaly, float(threshold), min_component_voxels)
        match = metrics.match_lesions(labels, predicted, reference, count)
        detected.append(match.reference_detected)
        false_positives.append(match.false_positives)
    return FrocCounts(
        np.asarray(thresholds, np.float64),
        np.array(detected, bool).reshape(len(thresholds), count),
        sizes.astype(np.float64),
        np.array(false_positives),
    )


def curve(cases: Sequence[FrocCounts]) -> dict:
    """Pooled lesion sensitivity (all lesions, and those >= :data:`LARGE_LESION_ML`) and mean false positives per
    scan at each threshold (the cases share their thresholds)."""
    detected = np.concatenate([c.detected for c in cases], axis=1)
    sizes = np.concatenate([c.lesion_ml for c in cases])
    large = sizes >= LARGE_LESION_ML

    def share(mask: np.ndarray) -> list[float]:
        return [float(row[mask].mean()) if mask.any() else float("nan") for row in detected]

    return {
        "thresholds": [float(t) for t in cases[0].thresholds],
        "sensitivity": share(np.ones_like(large)),
        f"sensitivity_lesions_ge_{LARGE_LESION_ML:g}ml": share(large),
        "false_positives_per_scan": [float(f) for f in np.mean([c.false_positives for c in cases], axis=0)],
        "lesions": int(sizes.size),
        f"lesions_ge_{LARGE_LESION_ML:g}ml": int(large.sum()),
        "scans": len(cases),
        "hit_rule": metrics.HIT_RULE,
    }


def operating_point(tuning: dict, target: float = TARGET_FALSE_POSITIVES) -> float | None:
    """The threshold of the tuning curve with the highest lesion sensitivity among those whose false positives per
    scan stay within ``target`` (ties: fewer false positives, then the higher threshold), or ``None`` when none
    does. Not simply the lowest such threshold: there a map may merge into one brain-sized component — one false
    positive, no lesion hit."""
    within = [
        (sensitivity if np.isfinite(sensitivity) else -1.0, -fp, t)
        for t, fp, sensitivity in zip(tuning["thresholds"], tuning["false_positives_per_scan"], tuning["sensitivity"])
        if fp <= target
    ]
    return max(within)[2] if within else None


def at(result: dict, threshold: float) -> dict:
    """The curve's point at ``threshold`` (one of its thresholds)."""
    i = int(np.argmin(np.abs(np.asarray(result["thresholds"]) - threshold)))
    keys = [k for k in result if k.startswith("sensitivity") or k == "false_positives_per_scan"]
    return {"threshold": result["thresholds"][i], **{k: result[k][i] for k in keys}}


def summarise(tuning: Sequence[FrocCounts], reported: Sequence[FrocCounts], threshold: float) -> dict | None:
    """The ``froc`` section of an evaluation summary: both curves, and the operating point chosen on the tuning
    curve for at most :data:`TARGET_FALSE_POSITIVES` false positives per scan, reported on the reported cases beside the
    operating (best-Dice or calibrated) ``threshold``; ``None`` without voxel-labelled reported cases."""
    if not reported:
        return None
    result = {"reported": curve(reported), "tuning": curve(tuning) if tuning else None}
    point = operating_point(result["tuning"]) if tuning else None
    result["operating_points"] = {
        "operating_threshold": {"source": "the evaluation's threshold", **at(result["reported"], threshold)},
        f"fp_budget_{TARGET_FALSE_POSITIVES:g}": (
            {
                "source": f"the most sensitive threshold with <= {TARGET_FALSE_POSITIVES:g} false positives per scan "
                "on the tuning cases",
                "tuning": at(result["tuning"], point),
                "reported": at(result["reported"], point),
            }
            if point is not None
            else {
                "source": "no threshold of the curve keeps the tuning cases within the budget"
                if tuning
                else "no tuning cases: pass --tune-cases to choose it"
            }
        ),
    }
    return result
