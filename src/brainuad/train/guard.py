"""The learned-nothing guard: does the model reconstruct held-out healthy scans better than the cohort mean image?

A model that reconstructs every brain as the average brain (or as a constant) turns the anomaly map into "how far
is this scan from average": ventricles, CSF and contrast, not lesions. At the end of training the validation scans'
reconstruction error inside the brain is compared with the training cohort's mean image's and with the nearest
training scan's; the result goes to ``summary.json`` as ``reconstruction_check``, and ``train``, ``calibrate``, the
detection report and the evaluation table show :func:`banner` when the model does not beat the mean image.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainuad.errors import BrainuadError
from brainuad.io.volumes import read_json
from brainuad.models.cohort import cohort_mean, masked_mse, nearest_mse


@torch.no_grad()
def reconstruction_check(
    model: nn.Module,
    volumes: np.ndarray,
    train_ids: list[int],
    val_ids: list[int],
    val_masks: list[np.ndarray],
    device: torch.device | str = "cpu",
    kind: str | None = None,
) -> dict:
    """Mean MSE inside the brain over the validation scans: the model's, the mean image's, the nearest training scan's.

    Args:
        model: The trained model (its best weights).
        volumes: ``(n, *shape)`` cache of all scans (train and validation rows).
        train_ids: Rows of the training split (for the mean image and the nearest scan).
        val_ids: Rows of the validation split.
        val_masks: Brain mask of each validation row.
        device: Where the model runs.
        kind: The model kind: methods that learn no reconstruction (``Method.learns`` false: the intensity and
            normative baselines) get ``beats_mean_image = None``; ``None`` = a learned model.

    Returns:
        ``{"model_mse", "mean_image_mse", "nearest_training_mse", "beats_mean_image", "val_cases", "note"}``.
    """
    model.eval()
    mean = cohort_mean(volumes, train_ids)
    model_errors, mean_errors, nearest_errors = [], [], []
    overlap = set(train_ids) & set(val_ids)
    for index, mask in zip(val_ids, val_masks):
        image = np.asarray(volumes[index], dtype=np.float32)
        x = torch.from_numpy(image)[None, None].to(device)
        reconstruction = model(x).float()[0, 0].cpu().numpy()
        model_errors.append(masked_mse(image, reconstruction, mask))
        mean_errors.append(masked_mse(image, mean, mask))
        others = [i for i in train_ids if i != index]
        nearest_errors.append(nearest_mse(image, mask, volumes, others) if others else math.nan)
    own = _self_check(model, volumes, val_ids, val_masks, device, mean)
    model_mse = float(np.mean(model_errors))
    mean_mse = float(np.mean(mean_errors))
    note = None
    if overlap:
        note = "validation scans are training scans (one healthy case): the check is not held-out"
    beats: bool | None = bool(model_mse < mean_mse)
    from brainuad.models.base import get_method

    if kind is not None and not get_method(kind).learns:
        beats = None
        note = f"{kind}: a baseline with no learned reconstruction"
    if own is not None and (
        own.get("restores_planted_anomalies") is False or own.get("segments_planted_anomalies") is False
    ):
        beats = False  # reconstructing healthy scans well is not enough for a method that must also restore/segment
    return {
        **(own or {}),
        "model_mse": model_mse,
        "mean_image_mse": mean_mse,
        "nearest_training_mse": float(np.mean(nearest_errors)),
        "beats_mean_image": beats,
        "val_cases": len(val_ids),
        "note": note,
    }


def _self_check(
    model: nn.Module,
    volumes: np.ndarray,
    val_ids: list[int],
    val_masks: list[np.ndarray],
    device,
    mean: np.ndarray | None = None,
) -> dict | None:
    """The method's own check (:meth:`brainuad.models.base.TrainingHooks.self_check`) on the validation scans,
    given the cohort mean image to compare with."""
    if not hasattr(model, "self_check") or not val_ids:
        return None
    x = torch.from_numpy(np.stack([np.asarray(volumes[i], np.float32) for i in val_ids]))[:, None].to(device)
    brain = torch.from_numpy(np.stack(val_masks))[:, None].to(device)
    reference = None if mean is None else torch.from_numpy(np.asarray(mean, np.float32))[None, None].to(device)
    return model.self_check(x, brain, mean=reference)


def read_check(run_dir: str | Path, strict: bool = True) -> dict | None:
    """The run's ``reconstruction_check`` from ``summary.json``, or ``None`` (older run, or never trained).

    Args:
        run_dir: The run folder.
        strict: Raise on an unreadable ``summary.json``; ``False`` = ``None`` (the verdict is advisory).
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    try:
        check = read_json(path).get("reconstruction_check")
    except (BrainuadError, OSError, AttributeError):
        if strict:
            raise
        return None
    return check if isinstance(check, dict) else None


def banner(run_dir: str | Path) -> str | None:
    """A one-line warning when the run's model does not reconstruct held-out scans better than the mean image."""
    return banner_text(read_check(run_dir))


def banner_text(check: dict | None) -> str | None:
    """:func:`banner` for a check already read."""
    if not check or check.get("beats_mean_image") is not False:
        return None
    if check.get("segments_planted_anomalies") is False:
        return (
            "WARNING: this model learned nothing: on held-out healthy scans with an anomaly of its held-out task "
            f"planted, its score finds the planted voxels no better (AP {check['heldout_ap']:.3f}) than the distance "
            f"from the cohort mean image does (AP {check['heldout_ap_mean_image']:.3f}); its anomaly map cannot show "
            "lesions. Train longer or on more data."
        )
    if check.get("restores_planted_anomalies") is False:
        return (
            "WARNING: this model learned nothing: on held-out healthy scans with planted anomalies, the error it "
            f"leaves inside them ({check['planted_mse_restored']:.4g}) is not below leaving them unrestored "
            f"({check['planted_mse_unrestored']:.4g}); its anomaly map cannot show lesions. Train longer or on more "
            "data."
        )
    return (
        "WARNING: this model learned nothing individual: on held-out healthy scans its reconstruction error inside "
        f"the brain ({check['model_mse']:.4g}) is not below the cohort mean image's ({check['mean_image_mse']:.4g}); "
        "its anomaly map shows how far a scan is from the average brain, not lesions. Train longer or on more data."
    )


def passed_text(check: dict | None) -> str | None:
    """The run's check, worded for a report or the console when the model passed it, else ``None``."""
    if not isinstance(check, dict) or check.get("beats_mean_image") is not True:
        return None
    if check.get("segments_planted_anomalies") is True:
        return (
            "This model passed its learned-something check: on held-out healthy scans with an anomaly of a task it "
            f"never trained on ({check.get('heldout_task')}) planted, its score finds the planted voxels better (AP "
            f"{check['heldout_ap']:.3f}) than the distance from the cohort mean image does (AP "
            f"{check['heldout_ap_mean_image']:.3f})."
        )
    if check.get("restores_planted_anomalies") is True:
        return (
            "This model passed its learned-something check: on held-out healthy scans with planted anomalies, the "
            f"error it leaves inside them ({check['planted_mse_restored']:.4g}) is below leaving them unrestored "
            f"({check['planted_mse_unrestored']:.4g})."
        )
    if isinstance(check.get("model_mse"), float) and isinstance(check.get("mean_image_mse"), float):
        return (
            "This model passed its learned-something check: its reconstruction error inside the brain on held-out "
            f"healthy scans ({check['model_mse']:.4g}) is below the cohort mean image's "
            f"({check['mean_image_mse']:.4g})."
        )
    return None


def report_warning(check: dict | None) -> str | None:
    """The same verdict, worded for a findings or demo report (with the check's numbers), else ``None``."""
    if not isinstance(check, dict) or check.get("beats_mean_image") is not False:
        return None
    if check.get("restores_planted_anomalies") is False or check.get("segments_planted_anomalies") is False:
        return banner_text(check).removeprefix("WARNING: ")
    numbers = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in check.items() if isinstance(v, float))
    return (
        "This model learned nothing beyond the healthy mean image: its reconstructions are no closer to healthy "
        f"validation scans than the cohort's mean image is{f' ({numbers})' if numbers else ''}. Its anomaly maps "
        "mostly show how a brain differs from the average brain; do not read them as findings."
    )
