"""Synthetic anomalies for the ``restore`` model: generic, label-free corruptions planted on the fly in healthy
training volumes, which the network learns to undo.

Deliberately not the lesion models of :mod:`brainuad.data.synthetic` / :mod:`brainuad.data.mrsim` (the demo tests
on those: a method trained on the generator it is tested with proves nothing). Following the synthetic-anomaly
family (FPI, NSA, DISYRE; Naval Marimont et al., ISBI 2024), each anomaly is a shape × a content × a strength:

- **shape**: a rotated ellipsoid with a mildly deformed border, or a blob (the same envelope deformed by strong
  smooth noise); its volume log-uniform from ``min_voxels`` to ``max_brain_fraction`` of the brain (at 2 mm: a few
  voxels to ~100 mL), its border soft or hard;
- **content**: an intensity shift or a scaling (brighter or darker), a patch of another scan of the batch or of
  another place of the same scan, or a smooth noise texture;
- **strength**: blended in at α ~ U(``min_strength``, 1).

Everything is drawn from torch's generator on the batch's device (the training step seeds it per step, so a run
replays its anomalies), and nothing is planted outside the brain (voxels > 0 of the clean scan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: What an anomaly's content is made of (one drawn per anomaly, equally likely).
CONTENTS = ("shift", "scale", "patch", "texture")
#: Shapes (one drawn per anomaly, equally likely).
SHAPES = ("ellipsoid", "blob")


@dataclass(frozen=True)
class AnomalySettings:
    """The generator's ranges.

    Attributes:
        fraction: Share of volumes given anomalies (the rest stay clean).
        max_count: Anomalies per corrupted volume: 1 to this many.
        min_voxels: Smallest anomaly volume, in voxels.
        max_brain_fraction: Largest anomaly volume, as a share of the volume's brain.
        min_strength: Blending strength α is drawn from U(min_strength, 1).
        shift: Intensity shifts are ±U(shift[0], shift[1]) (scans scaled to 0…1).
        scale: Intensity scalings are exp(±U(log scale[0], log scale[1])): darker or brighter.
    """

    fraction: float = 0.8
    max_count: int = 3
    min_voxels: int = 4
    max_brain_fraction: float = 0.08
    min_strength: float = 0.3
    shift: tuple[float, float] = (0.1, 0.5)
    scale: tuple[float, float] = (1.25, 3.0)


def _uniform(low: float, high: float, device: torch.device) -> float:
    return float(low + (high - low) * torch.rand((), device=device))


def _smooth_noise(shape: tuple[int, ...], cells: int, device: torch.device) -> torch.Tensor:
    """Noise in −1…1 drawn on a ``cells``³ grid and upsampled (trilinear) to ``shape``: smooth at the shape's scale."""
    coarse = torch.rand(1, 1, cells, cells, cells, device=device) * 2 - 1
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0]


def _random_rotation(device: torch.device) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, device=device))
    return q * torch.sign(torch.diagonal(r))


def shape_mask(
    brain: torch.Tensor, voxels: float, kind: str, soft: bool
) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
    """One anomaly's mask (0…1) in a box around a random brain voxel, and the box.

    Args:
        brain: The volume's brain (bool, 3D).
        voxels: Target volume in voxels (the mask's sum comes close; the brain may clip it).
        kind: ``ellipsoid`` (mildly deformed border) or ``blob`` (strongly deformed).
        soft: Whether the border is blurred (fractional values) or hard.
    """
    device = brain.device
    inside = brain.nonzero()
    centre = inside[int(torch.randint(len(inside), (), device=device))]
    radius = (3 * voxels / (4 * math.pi)) ** (1 / 3)
    axes = torch.exp(torch.empty(3, device=device).uniform_(-0.4, 0.4))
    axes = radius * axes / axes.prod() ** (1 / 3)
    half = math.ceil(float(axes.max()) * 1.6) + 2
    lo = [max(0, int(c) - half) for c in centre]
    hi = [min(s, int(c) + half + 1) for c, s in zip(centre, brain.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = torch.meshgrid(
        *[torch.arange(a, b, device=device, dtype=torch.float32) for a, b in zip(lo, hi)], indexing="ij"
    )
    offsets = torch.stack([g - float(c) for g, c in zip(grids, centre)], dim=-1)
    local = offsets @ _random_rotation(device)
    distance = torch.sqrt(((local / axes) ** 2).sum(-1))
    size = tuple(b - a for a, b in zip(lo, hi))
    amplitude, cells = (0.15, 3) if kind == "ellipsoid" else (0.55, 5)
    distance = distance + amplitude * _smooth_noise(size, cells, device)
    mask = (distance < 1).float()
    if soft:
        mask = F.avg_pool3d(mask[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    return mask * brain[box], box


def _content(x: torch.Tensor, b: int, box, kind: str, settings: AnomalySettings) -> torch.Tensor:
    """What replaces the tissue in ``box`` of volume ``b`` (before blending)."""
    device = x.device
    region = x[b, 0][box]
    sign = 1.0 if torch.rand((), device=device) < 0.5 else -1.0
    if kind == "shift":
        return region + sign * _uniform(*settings.shift, device)
    if kind == "scale":
        return region * math.exp(sign * _uniform(math.log(settings.scale[0]), math.log(settings.scale[1]), device))
    if kind == "patch":
        # Another scan of the batch at the same place, or this scan at another place (shifted by a random offset).
        size = region.shape
        source = int(torch.randint(x.shape[0], (), device=device)) if x.shape[0] > 1 else b
        if source == b:
            start = [int(torch.randint(max(1, s - n + 1), (), device=device)) for s, n in zip(x.shape[2:], size)]
            return x[b, 0][tuple(slice(a, a + n) for a, n in zip(start, size))]
        return x[source, 0][box]
    level = float(region[region > 0].mean()) if bool((region > 0).any()) else 0.5
    return level + sign * _uniform(0.1, 0.4, device) + 0.2 * _smooth_noise(tuple(region.shape), 6, device)


def plant_anomalies(
    x: torch.Tensor, settings: AnomalySettings = AnomalySettings()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plant synthetic anomalies in a batch of clean scans.

    Args:
        x: Clean scans, ``(batch, 1, *shape)``, 0…1, zero outside the brain.
        settings: The generator's ranges.

    Returns:
        The corrupted batch (same shape, clamped to 0…1, unchanged outside the brain) and the blend weights
        ``(batch, 1, *shape)``: 0 where nothing was planted, up to 1 where the anomaly replaced the tissue.
    """
    settings = settings or AnomalySettings()
    out = x.clone()
    weights = torch.zeros_like(x)
    device = x.device
    for b in range(x.shape[0]):
        brain = x[b, 0] > 0
        brain_voxels = int(brain.sum())
        if brain_voxels < settings.min_voxels or torch.rand((), device=device) >= settings.fraction:
            continue
        count = int(torch.randint(1, settings.max_count + 1, (), device=device))
        high = max(settings.min_voxels, settings.max_brain_fraction * brain_voxels)
        for _ in range(count):
            voxels = math.exp(_uniform(math.log(settings.min_voxels), math.log(high), device))
            kind = SHAPES[int(torch.randint(len(SHAPES), (), device=device))]
            mask, box = shape_mask(brain, voxels, kind, soft=bool(torch.rand((), device=device) < 0.5))
            content = _content(out, b, box, CONTENTS[int(torch.randint(len(CONTENTS), (), device=device))], settings)
            alpha = _uniform(settings.min_strength, 1.0, device) * mask
            region = out[b, 0][box]
            out[b, 0][box] = torch.where(brain[box], (region * (1 - alpha) + content * alpha).clamp(0, 1), region)
            weights[b, 0][box] = torch.maximum(weights[b, 0][box], alpha)
    return out, weights


# --- Named self-supervised tasks (the ``segment`` model; Baugh et al., MICCAI 2023, "Many tasks make light work") ---
#
# Each task plants one anomaly in one volume and returns the changed volume and a soft label (0…1): how strongly each
# voxel was changed. They are generic and label-free: none uses a tissue label or a lesion model. One task is held
# out of training and only validates (model selection and early stopping need no real lesion).

#: The named tasks, in a fixed order (a run's config names the held-out one).
TASKS = ("intensity", "patch", "deformation", "poisson")
#: Smallest mean absolute change inside an anomaly (scans scaled to 0…1) for it to count: an anomaly that changes
#: nothing visible (a patch blended onto the same tissue) would teach the network to flag unchanged tissue.
MIN_VISIBLE_CHANGE = 0.02


@dataclass(frozen=True)
class TaskSettings:
    """The ranges the named tasks draw from.

    Attributes:
        min_voxels: Smallest anomaly volume, in voxels.
        max_brain_fraction: Largest anomaly volume, as a share of the brain in view (a patch or a whole volume).
        min_strength: A blend's strength is drawn from U(min_strength, 1).
        max_count: Anomalies per corrupted volume: 1 to this many.
        fraction: Share of volumes given anomalies (the rest stay clean: the network must also say "nothing").
    """

    min_voxels: int = 8
    max_brain_fraction: float = 0.15
    min_strength: float = 0.4
    max_count: int = 2
    fraction: float = 0.85


def _gaussian_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of a 3D tensor (zero padding scaled out: edges are not darkened)."""
    if sigma <= 0:
        return volume
    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, device=volume.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out, ones = volume[None, None].float(), torch.ones_like(volume)[None, None].float()
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = radius
        out = F.conv3d(out, kernel.view(shape), padding=tuple(padding))
        ones = F.conv3d(ones, kernel.view(shape), padding=tuple(padding))
    return (out / ones.clamp_min(1e-6))[0, 0]


def _task_intensity(volume: torch.Tensor, others: torch.Tensor, brain, box, mask, strength, settings) -> torch.Tensor:
    """Intensity or texture change: a shift, a scaling or a smooth noise texture (as restore's contents)."""
    device = volume.device
    region = volume[box]
    sign = 1.0 if torch.rand((), device=device) < 0.5 else -1.0
    kind = int(torch.randint(3, (), device=device))
    if kind == 0:
        return region + sign * _uniform(0.1, 0.5, device)
    if kind == 1:
        return region * math.exp(sign * _uniform(math.log(1.25), math.log(3.0), device))
    level = float(region[region > 0].mean()) if bool((region > 0).any()) else 0.5
    return level + sign * _uniform(0.05, 0.4, device) + 0.2 * _smooth_noise(tuple(region.shape), 6, device)


def _source_region(volume: torch.Tensor, others: torch.Tensor, box) -> torch.Tensor:
    """The same box's size from another scan (at a random place) or from this scan at another place."""
    device = volume.device
    size = tuple(s.stop - s.start for s in box)
    pool = [volume] + [others[i] for i in range(others.shape[0])]
    source = pool[int(torch.randint(len(pool), (), device=device))]
    start = [int(torch.randint(max(1, s - n + 1), (), device=device)) for s, n in zip(source.shape, size)]
    return source[tuple(slice(a, a + n) for a, n in zip(start, size))]


def _task_patch(volume: torch.Tensor, others: torch.Tensor, brain, box, mask, strength, settings) -> torch.Tensor:
    """Foreign-patch blending (Tan et al. 2020): tissue from another scan or place, blended by the soft mask."""
    return _source_region(volume, others, box)


def _task_poisson(volume: torch.Tensor, others: torch.Tensor, brain, box, mask, strength, settings) -> torch.Tensor:
    """A gradient-domain blend (Poisson image interpolation, Tan et al. 2021, approximated): the source's detail
    (its high frequencies) on the target's own low frequencies, so the blend has no intensity step at its border
    and only its texture and structure are foreign. Its local contrast is scaled (×0.5–2) so it is not always
    subtle."""
    source = _source_region(volume, others, box)
    sigma = max(1.0, 0.25 * min(source.shape))
    detail = source - _gaussian_blur(source, sigma)
    gain = math.exp(_uniform(math.log(0.5), math.log(2.0), volume.device))
    return _gaussian_blur(volume[box], sigma) + gain * detail


def _task_deformation(volume: torch.Tensor, others: torch.Tensor, brain, box, mask, strength, settings):
    """A local deformation: the tissue in the box is pushed out from (or pulled into) the anomaly's centre by a
    smooth radial field, as a mass would displace it; the content is the warped tissue."""
    device = volume.device
    region = volume[box]
    shape = region.shape
    grids = torch.meshgrid(*[torch.linspace(-1, 1, n, device=device) for n in shape], indexing="ij")
    coords = torch.stack(grids, dim=-1)  # (D, H, W, 3) in -1…1, axis order of the volume
    radius = torch.sqrt((coords**2).sum(-1, keepdim=True)).clamp_min(1e-6)
    amount = _uniform(0.3, 0.8, device) * (1.0 if torch.rand((), device=device) < 0.5 else -1.0)
    # Radial scaling of the sampling coordinates, strongest at the centre and fading to none at the box's border.
    falloff = torch.clamp(1 - radius, min=0)
    sample = coords * (1 - amount * falloff)
    sample = sample + 0.1 * torch.stack([_smooth_noise(tuple(shape), 3, device) for _ in range(3)], -1) * falloff
    # grid_sample takes (x, y, z) = (last, middle, first) axis.
    warped = F.grid_sample(region[None, None], sample.flip(-1)[None], mode="bilinear", padding_mode="border",
                           align_corners=True)  # fmt: skip
    return warped[0, 0]


_TASK_CONTENT = {
    "intensity": _task_intensity,
    "patch": _task_patch,
    "deformation": _task_deformation,
    "poisson": _task_poisson,
}


def plant_task(
    volume: torch.Tensor, task: str, others: torch.Tensor | None = None, settings: TaskSettings | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plant 1 to ``settings.max_count`` anomalies of one named task in one volume (or patch).

    Args:
        volume: A clean scan or patch, 3D, 0…1, zero outside the brain.
        task: One of :data:`TASKS`.
        others: Other scans or patches of the same shape (foreign tissue for ``patch`` and ``poisson``).
        settings: The size and strength ranges.

    Returns:
        The changed volume (clamped to 0…1, unchanged outside the brain) and the soft label (0…1, zero outside the
        brain and wherever the change is invisible).

    Raises:
        ValueError: An unknown task.
    """
    if task not in _TASK_CONTENT:
        raise ValueError(f"unknown synthetic task {task!r}; known: {', '.join(TASKS)}")
    settings = settings or TaskSettings()
    device = volume.device
    others = others if others is not None else volume[None]
    out = volume.clone()
    label = torch.zeros_like(volume)
    brain = volume > 0
    brain_voxels = int(brain.sum())
    if brain_voxels < settings.min_voxels:
        return out, label
    count = int(torch.randint(1, settings.max_count + 1, (), device=device))
    high = max(settings.min_voxels * 1.01, settings.max_brain_fraction * brain_voxels)
    for _ in range(count):
        voxels = math.exp(_uniform(math.log(settings.min_voxels), math.log(high), device))
        kind = SHAPES[int(torch.randint(len(SHAPES), (), device=device))]
        mask, box = shape_mask(brain, voxels, kind, soft=True)
        if not bool((mask > 0).any()):
            continue
        strength = _uniform(settings.min_strength, 1.0, device)
        content = _TASK_CONTENT[task](out, others, brain, box, mask, strength, settings)
        alpha = strength * mask
        region = out[box]
        changed = torch.where(brain[box], (region * (1 - alpha) + content * alpha).clamp(0, 1), region)
        inside = mask > 0.5
        visible = float((changed - region).abs()[inside].mean()) if bool(inside.any()) else 0.0
        if visible < MIN_VISIBLE_CHANGE:
            continue
        out[box] = changed
        label[box] = torch.maximum(label[box], alpha * brain[box])
    return out, label


def plant_tasks(
    batch: torch.Tensor, tasks: tuple[str, ...], settings: TaskSettings | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plant a task drawn from ``tasks`` in each volume of a batch (``settings.fraction`` of them; the rest stay
    clean); the other volumes of the batch lend foreign tissue.

    Args:
        batch: ``(batch, 1, *shape)`` clean scans or patches.
        tasks: The tasks to draw from (the training tasks, or the held-out one).
        settings: The size and strength ranges.

    Returns:
        The corrupted batch and the soft labels, both ``(batch, 1, *shape)``.
    """
    settings = settings or TaskSettings()
    out, labels = batch.clone(), torch.zeros_like(batch)
    for b in range(batch.shape[0]):
        if torch.rand((), device=batch.device) >= settings.fraction:
            continue
        task = tasks[int(torch.randint(len(tasks), (), device=batch.device))]
        others = torch.cat([batch[:b, 0], batch[b + 1 :, 0]]) if batch.shape[0] > 1 else batch[b]
        out[b, 0], labels[b, 0] = plant_task(batch[b, 0], task, others, settings)
    return out, labels
