"""Augmentation for small healthy cohorts (MONAI): anatomical and intensity variation, seeded per batch.

Spatial transforms (small affine, elastic) run first; the brain region they produce then limits the intensity
transforms (bias field, gamma, noise), so the background stays exactly zero as in preprocessed scans.
"""

from __future__ import annotations

import numpy as np
import torch


class Augmenter:
    """Random affine + elastic deformation, then bias field, brightness, gamma and noise, on ``(C, D, H, W)`` tensors.

    Args:
        elastic: Include the (slower) elastic deformation.
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
                # nnU-Net's brightness and gamma ranges: healthy T2 contrast differs between scanners and sites
                # far more than between two templates, and the model must follow the input's contrast, not learn one.
                RandScaleIntensity(prob=0.5, factors=0.25),
                RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
                RandGaussianNoise(prob=0.3, std=0.02),
            ]
        )
        self.description = {
            "affine": "p=0.8, rotation ±0.1 rad, scale ±5%, translation ±4 voxels",
            "elastic": "p=0.3, sigma 6–8, magnitude 40–80" if elastic else "off",
            "bias_field": "p=0.5, coefficients 0–0.2, degree 3",
            "brightness": "p=0.5, ×0.75–1.25",
            "gamma": "p=0.5, 0.7–1.5",
            "noise": "p=0.3, std 0.02",
        }

    def __call__(self, volume: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment one ``(1, D, H, W)`` volume in [0, 1]; the same seed gives the same result."""
        self.spatial.set_random_state(seed=seed % (2**32))
        self.intensity.set_random_state(seed=(seed * 7919 + 1) % (2**32))
        moved = torch.as_tensor(self.spatial(volume)).float()
        brain = moved > 1e-4
        changed = torch.as_tensor(self.intensity(moved.clamp(0, 1))).float()
        return torch.where(brain, changed.clamp(0, 1), torch.zeros_like(changed))


def batch_seed(*keys: int) -> int:
    """A reproducible per-volume seed from integers (run seed, epoch, step, position, volume index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
