"""Augmentation for small healthy cohorts: anatomical and intensity variation, a whole batch at once on its device.

:class:`Augmenter` draws, per volume, a small affine and (sometimes) an elastic deformation, then a bias field,
brightness, gamma and noise — the distributions of the MONAI pipeline this project used first
(:class:`MonaiAugmenter`, kept as the reference that tests and benchmarks compare against). The batched version
builds one sampling grid per volume (affine ∘ elastic: displacements drawn on a coarse grid, smoothed and upsampled)
and resamples once with :func:`torch.nn.functional.grid_sample`; the intensity changes are tensor operations on the
volumes they were drawn for. Everything runs where the batch lies, without host–device synchronisation.

Spatial transforms come first; the brain region they produce then limits the intensity transforms, so the
background stays exactly zero as in preprocessed scans. Each volume's draws come from its own seed
(:func:`brainuad.seeds.batch_seed` of run seed, epoch, step, position, index), so a resumed run replays them exactly
(bit for bit
on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Probabilities and ranges (MONAI's meaning: rotation ±0.1 rad per axis, scale 1 ± 0.05, translation ±4 voxels;
#: elastic offsets uniform(-1, 1) smoothed with a Gaussian of sigma 6–8 voxels, times magnitude 40–80; bias field
#: exp(degree-3 Legendre polynomial, coefficients 0–0.2); brightness ×(1 ± 0.25); gamma 0.7–1.5 on the volume's
#: range; Gaussian noise with a standard deviation drawn from 0–0.02).
DESCRIPTION = {
    "implementation": "brainuad batched (one grid_sample per volume; MONAI-equivalent distributions)",
    "affine": "p=0.8, rotation ±0.1 rad, scale ±5%, translation ±4 voxels",
    "elastic": "p=0.3, sigma 6–8, magnitude 40–80",
    "bias_field": "p=0.5, coefficients 0–0.2, degree 3",
    "brightness": "p=0.5, ×0.75–1.25",
    "gamma": "p=0.5, 0.7–1.5",
    "noise": "p=0.3, std 0–0.02",
}
BIAS_DEGREE = 3
#: Elastic offsets are drawn on a grid this many voxels apart (sigma ≥ 6 voxels: the field is smooth between nodes).
ELASTIC_SPACING = 4.0
_EPS = 1e-7  # MONAI's gamma epsilon


@dataclass(frozen=True)
class Draw:
    """One volume's random choices (drawn on the CPU from its seed; the device draws from ``device_seed``)."""

    affine: bool
    angles: tuple[float, float, float]
    scales: tuple[float, float, float]
    shifts: tuple[float, float, float]
    elastic: bool
    sigma: float
    magnitude: float
    bias: bool
    coefficients: tuple[float, ...]
    brightness: bool
    factor: float
    gamma: bool
    gamma_value: float
    noise: bool
    noise_std: float
    device_seed: int

    @classmethod
    def from_seed(cls, seed: int, elastic: bool = True) -> Draw:
        """Every value is always drawn (in a fixed order), so switching one transform off changes no other draw."""
        rng = np.random.default_rng(seed)
        n_coefficients = math.comb(BIAS_DEGREE + 3, 3)
        return cls(
            affine=bool(rng.random() < 0.8),
            angles=tuple(rng.uniform(-0.1, 0.1, 3).tolist()),
            scales=tuple((1.0 + rng.uniform(-0.05, 0.05, 3)).tolist()),
            shifts=tuple(rng.uniform(-4.0, 4.0, 3).tolist()),
            elastic=bool(rng.random() < 0.3) and elastic,
            sigma=float(rng.uniform(6.0, 8.0)),
            magnitude=float(rng.uniform(40.0, 80.0)),
            bias=bool(rng.random() < 0.5),
            coefficients=tuple(rng.uniform(0.0, 0.2, n_coefficients).tolist()),
            brightness=bool(rng.random() < 0.5),
            factor=float(1.0 + rng.uniform(-0.25, 0.25)),
            gamma=bool(rng.random() < 0.5),
            gamma_value=float(rng.uniform(0.7, 1.5)),
            noise=bool(rng.random() < 0.3),
            noise_std=float(rng.uniform(0.0, 0.02)),
            device_seed=int(rng.integers(2**62)),
        )


def _to_device(values, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """A small host array on ``device`` without a host–device synchronisation (pinned, non-blocking on CUDA)."""
    tensor = torch.as_tensor(np.asarray(values), dtype=dtype)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    """Rotation about array axes 0, 1, 2 (in that order of composition, as MONAI's ``create_rotate``)."""
    c, s = np.cos(angles), np.sin(angles)
    r0 = np.array([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]])
    r1 = np.array([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]])
    r2 = np.array([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]])
    return r0 @ r1 @ r2


def _theta(draw: Draw, shape: Sequence[int]) -> np.ndarray:
    """The affine in ``grid_sample``'s normalised coordinates, axes in (x, y, z) = array axes (2, 1, 0): (3, 4).

    In voxels about the centre, output position p samples the input at R (S p + t) (MONAI's composition
    rotate @ translate @ scale); normalised coordinates are n = 2 p / size (``align_corners=False``).
    """
    if draw.affine:
        rotation = _rotation(draw.angles)
        linear, shift = rotation @ np.diag(draw.scales), rotation @ np.asarray(draw.shifts)
    else:
        linear, shift = np.eye(3), np.zeros(3)
    to_norm = np.diag(2.0 / np.asarray(shape, dtype=float))
    linear_n, shift_n = to_norm @ linear @ np.linalg.inv(to_norm), to_norm @ shift
    order = [2, 1, 0]
    return np.concatenate([linear_n[np.ix_(order, order)], shift_n[order, None]], axis=1)


def _gaussian_kernels(sigmas: Sequence[float], radius: int) -> np.ndarray:
    """Normalised 1-D Gaussian kernels truncated at 3 sigma (MONAI's elastic smoothing), all 2 * radius + 1 long."""
    x = np.arange(-radius, radius + 1, dtype=float)
    sigmas = np.asarray(sigmas, dtype=float)[:, None]
    kernels = np.exp(-0.5 * (x[None] / sigmas) ** 2) * (np.abs(x)[None] <= 3 * sigmas + 0.5)
    return kernels / kernels.sum(1, keepdims=True)


def _interpolation_matrix(size: int, nodes: int) -> np.ndarray:
    """Linear interpolation from ``nodes`` evenly spread samples to ``size`` voxels (``align_corners=True``)."""
    position = np.linspace(0, nodes - 1, size)
    low = np.minimum(np.floor(position).astype(int), nodes - 2)
    fraction = position - low
    matrix = np.zeros((size, nodes))
    matrix[np.arange(size), low] = 1 - fraction
    matrix[np.arange(size), low + 1] = fraction
    return matrix


class _Geometry:
    """Per (shape, device) constants: the coarse node grid, its interpolation matrices and Legendre bases."""

    def __init__(self, shape: Sequence[int], device: torch.device):
        self.shape = tuple(int(s) for s in shape)
        self.nodes = [max(2, round((s - 1) / ELASTIC_SPACING) + 1) for s in self.shape]
        self.spacing = [(s - 1) / (m - 1) for s, m in zip(self.shape, self.nodes)]
        # Normalised (align_corners=False) coordinates of the coarse nodes, per array axis.
        node_positions = [np.linspace(0, s - 1, m) for s, m in zip(self.shape, self.nodes)]
        normalised = [(2 * p + 1) / s - 1 for p, s in zip(node_positions, self.shape)]
        n0, n1, n2 = np.meshgrid(*normalised, indexing="ij")
        self.base = _to_device(np.stack([n2, n1, n0, np.ones_like(n0)], axis=-1), device)  # (x, y, z, 1)
        self.interpolate = [_to_device(_interpolation_matrix(s, m), device) for s, m in zip(self.shape, self.nodes)]
        self.to_normalised = _to_device([2.0 / s for s in reversed(self.shape)], device)
        index = [
            (i, j, k)
            for i in range(BIAS_DEGREE + 1)
            for j in range(BIAS_DEGREE + 1 - i)
            for k in range(BIAS_DEGREE + 1 - i - j)
        ]  # MONAI's (and numpy's leggrid3d) term order
        self.bias_terms = index
        self.legendre = [
            _to_device(
                np.stack([np.polynomial.legendre.Legendre.basis(k)(np.linspace(-1, 1, s)) for k in range(4)]), device
            )
            for s in self.shape
        ]

    def upsample(self, coarse: torch.Tensor) -> torch.Tensor:
        """(m0, m1, m2, 3) node values → (D, H, W, 3) by separable linear interpolation.

        Three matrix products arranged so that no step needs a transpose (the last writes the grid's layout).
        """
        m0, m1, m2 = self.interpolate
        field = torch.matmul(m2, coarse)  # (m0, m1, W, 3)
        field = torch.matmul(m1, field.reshape(field.shape[0], field.shape[1], -1))  # (m0, H, W * 3)
        out = m0 @ field.reshape(field.shape[0], -1)  # (D, H * W * 3)
        return out.reshape(*self.shape, 3)


def _elastic_offsets(draw: Draw, geometry: _Geometry, device: torch.device) -> torch.Tensor:
    """A smooth displacement field on the coarse nodes, (3, m0, m1, m2), in voxels along array axes 0, 1, 2.

    MONAI draws uniform(-1, 1) offsets at every voxel, smooths them with a Gaussian of ``sigma`` voxels and multiplies
    by ``magnitude``. Here the offsets are drawn on nodes ``ELASTIC_SPACING`` voxels apart, smoothed there with
    ``sigma / spacing`` and scaled by ``1 / sqrt(spacing)`` per axis (white noise smoothed on a coarser grid has that
    much more variance); linear interpolation between the nodes then gives the same standard deviation and correlation
    length at a fraction of the cost.
    """
    offsets = np.random.default_rng(draw.device_seed).uniform(-1.0, 1.0, (3, *geometry.nodes))
    field = _to_device(offsets, device)
    smooth = []
    for nodes, spacing in zip(geometry.nodes, geometry.spacing):
        # Zero padding as MONAI's filter: a banded matrix of the truncated kernel.
        sigma = draw.sigma / spacing
        radius = int(3 * sigma + 0.5)
        kernel = _gaussian_kernels([sigma], radius)[0]
        offset = np.arange(nodes)[:, None] - np.arange(nodes)[None, :]
        inside = np.abs(offset) <= radius
        smooth.append(_to_device(np.where(inside, kernel[np.clip(offset + radius, 0, 2 * radius)], 0.0), device))
    field = torch.einsum("cabk,Kk->cabK", field, smooth[2])
    field = torch.einsum("cabk,Bb->caBk", field, smooth[1])
    field = torch.einsum("cabk,Aa->cAbk", field, smooth[0])
    return field * (draw.magnitude / math.sqrt(math.prod(geometry.spacing)))


def _sampling_grid(draw: Draw, geometry: _Geometry, device: torch.device) -> torch.Tensor:
    """The (1, D, H, W, 3) grid for ``grid_sample``: the output samples the input at A (p + d(p)) + t.

    Built on the coarse nodes (affine and elastic displacement together) and interpolated to every voxel, which is
    exact for the affine part (a linear function) and is how the elastic field is defined.
    """
    theta = _to_device(_theta(draw, geometry.shape), device)
    coarse = geometry.base @ theta.T  # (m0, m1, m2, 3) in (x, y, z)
    if draw.elastic:
        offsets = _elastic_offsets(draw, geometry, device).flip(0)  # axes 0, 1, 2 → x, y, z
        offsets = offsets.permute(1, 2, 3, 0) * geometry.to_normalised
        coarse = coarse + offsets @ theta[:, :3].T
    return geometry.upsample(coarse)[None]


def _bias_field(draw: Draw, geometry: _Geometry, device: torch.device) -> torch.Tensor:
    """exp(sum of c_ijk P_i P_j P_k over i + j + k <= 3) on the volume's grid: MONAI's ``RandBiasField``, (D, H, W)."""
    coefficients = np.zeros((BIAS_DEGREE + 1,) * 3)
    for (i, j, k), value in zip(geometry.bias_terms, draw.coefficients):
        coefficients[i, j, k] = value
    c = _to_device(coefficients, device)
    p0, p1, p2 = geometry.legendre
    field = torch.einsum("ijk,kw->ijw", c, p2)
    field = torch.einsum("ijw,jh->ihw", field, p1)
    return torch.einsum("ihw,id->dhw", field, p0).exp_()


class Augmenter:
    """Random affine + elastic deformation, then bias field, brightness, gamma and noise, for a batch on its device.

    Volumes are processed one after the other (each is millions of voxels: every operation is a large kernel), so a
    volume's result depends only on its seed, never on the batch it came in.

    Args:
        elastic: Include the elastic deformation.
    """

    def __init__(self, elastic: bool = True):
        self.elastic = elastic
        self.description = {**DESCRIPTION, "elastic": DESCRIPTION["elastic"] if elastic else "off"}
        self._geometry: dict[tuple, _Geometry] = {}

    def draws(self, seeds: Sequence[int]) -> list[Draw]:
        """Each volume's random choices."""
        return [Draw.from_seed(s, self.elastic) for s in seeds]

    def __call__(self, batch: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Augment ``(N, C, D, H, W)`` volumes in [0, 1] where they lie; ``seeds[i]`` fixes volume i's draws."""
        if len(seeds) != batch.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for a batch of {batch.shape[0]} volumes")
        out = torch.empty_like(batch, memory_format=torch.contiguous_format)
        for i, draw in enumerate(self.draws(seeds)):
            out[i] = self.augment_volume(batch[i], draw)
        return out

    def geometry(self, shape: Sequence[int], device: torch.device) -> _Geometry:
        key = (tuple(shape), str(device))
        if key not in self._geometry:
            self._geometry[key] = _Geometry(shape, device)
        return self._geometry[key]

    def spatial(self, volume: torch.Tensor, draw: Draw) -> torch.Tensor:
        """One resampling (bilinear, zero padding) for the affine and elastic deformation together."""
        if not (draw.affine or draw.elastic):
            return volume
        grid = _sampling_grid(draw, self.geometry(volume.shape[1:], volume.device), volume.device)
        chunks = torch.get_num_threads() if volume.device.type == "cpu" and volume.shape[0] == 1 else 1
        if chunks > 1 and volume.shape[1] % chunks == 0:
            # On the CPU grid_sample runs one thread per volume: resample slabs of the output as a batch instead.
            slabs = grid.reshape(chunks, volume.shape[1] // chunks, *grid.shape[2:])
            sampled = F.grid_sample(
                volume[None].expand(chunks, *volume.shape), slabs, "bilinear", "zeros", align_corners=False
            )
            return sampled.reshape(volume.shape)
        return F.grid_sample(volume[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]

    def intensity(self, moved: torch.Tensor, draw: Draw) -> torch.Tensor:
        """Bias field and brightness (one gain), gamma, noise; then clipped to [0, 1] with the background kept zero."""
        device = moved.device
        background = moved <= 1e-4  # the brain region after the spatial transforms
        out = moved.clamp(0, 1)
        if draw.bias:
            field = _bias_field(draw, self.geometry(moved.shape[1:], device), device)
            out.mul_(field.mul_(draw.factor) if draw.brightness else field)
        elif draw.brightness:
            out.mul_(draw.factor)
        if draw.gamma:
            low = out.amin()
            span = out.amax() - low
            out.sub_(low).div_(span + _EPS).pow_(draw.gamma_value).mul_(span).add_(low)
        if draw.noise:
            # Its own stream (seed + 1), so noise and the elastic offsets never share random numbers.
            generator = torch.Generator(device=device).manual_seed(draw.device_seed + 1)
            out.add_(torch.empty_like(out).normal_(0.0, draw.noise_std, generator=generator))
        return out.clamp_(0, 1).masked_fill_(background, 0.0)

    def augment_volume(self, volume: torch.Tensor, draw: Draw) -> torch.Tensor:
        """One ``(C, D, H, W)`` volume."""
        return self.intensity(self.spatial(volume, draw), draw)


class MonaiAugmenter:
    """The MONAI pipeline :class:`Augmenter` reproduces, one ``(C, D, H, W)`` volume at a time (reference only).

    Args:
        elastic: Include the elastic deformation.
    """

    def __init__(self, elastic: bool = True):
        from monai.transforms import (
            Compose,
            Rand3DElastic,
            RandAdjustContrast,
            RandAffine,
            RandBiasField,
            RandGaussianNoise,
            RandScaleIntensity,
        )

        spatial = [
            RandAffine(
                prob=0.8,
                rotate_range=(0.1, 0.1, 0.1),
                scale_range=(0.05, 0.05, 0.05),
                translate_range=(4, 4, 4),
                padding_mode="zeros",
            )
        ]
        if elastic:
            spatial.append(Rand3DElastic(prob=0.3, sigma_range=(6, 8), magnitude_range=(40, 80), padding_mode="zeros"))
        self.spatial = Compose(spatial)
        self.intensity = Compose(
            [
                RandBiasField(prob=0.5, coeff_range=(0.0, 0.2), degree=3),
                RandScaleIntensity(prob=0.5, factors=0.25),
                RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
                RandGaussianNoise(prob=0.3, std=0.02),
            ]
        )

    def __call__(self, volume: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment one ``(1, D, H, W)`` volume in [0, 1]; the same seed gives the same result."""
        self.spatial.set_random_state(seed=seed % (2**32))
        self.intensity.set_random_state(seed=(seed * 7919 + 1) % (2**32))
        moved = torch.as_tensor(self.spatial(volume)).float()
        brain = moved > 1e-4
        changed = torch.as_tensor(self.intensity(moved.clamp(0, 1))).float()
        return torch.where(brain, changed.clamp(0, 1), torch.zeros_like(changed))

