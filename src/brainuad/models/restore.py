"""Restoration of synthetic anomalies (``restore``): a 3D U-Net learns to undo generic anomalies planted on the fly in
healthy training scans (:mod:`brainuad.models.anomalies`); the anomaly map is |x − restored x|.

The family of DISYRE (Naval Marimont et al., "Diffusion-inspired synthetic restoration", ISBI 2024) and of the
synthetic-anomaly methods that won MOOD. Its training target is the clean scan and its loss counts inside the brain
only. The network predicts a correction added to its input (the head starts at zero: an untrained model restores
nothing), so healthy tissue passes through while what does not look healthy is pulled back to tissue.

``restore_steps`` > 1 restores iteratively, each pass on the previous pass's output (a cold-diffusion-like schedule
without a severity input); benchmarks/restore_steps.py measures whether that beats one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from brainuad.errors import ConfigError
from brainuad.models.anomalies import AnomalySettings, plant_anomalies
from brainuad.models.base import Method, ModelConfig, TrainingHooks
from brainuad.models.layers import UNet3D


@dataclass(frozen=True)
class RestoreOptions:
    """Settings of the ``restore`` model.

    Attributes:
        anomaly_fraction: Share of training volumes given synthetic anomalies (the rest stay clean).
        max_anomalies: Synthetic anomalies per corrupted training volume: 1 to this many.
        max_anomaly_fraction: Largest synthetic anomaly, as a share of the brain (0.08 ≈ 100 mL of an adult brain).
        restore_steps: Restoration passes at inference (1 = one pass; each further pass restores the last output).
    """

    anomaly_fraction: float = 0.8
    max_anomalies: int = 3
    max_anomaly_fraction: float = 0.08
    restore_steps: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.anomaly_fraction <= 1 or not 0 < self.max_anomaly_fraction < 1:
            raise ConfigError("model.options.anomaly_fraction must be in 0…1 and max_anomaly_fraction in (0, 1)")
        if self.max_anomalies < 1 or self.restore_steps < 1:
            raise ConfigError("model.options.max_anomalies and model.options.restore_steps must be >= 1")


class RestorationUNet3D(TrainingHooks, UNet3D):
    """A 3D U-Net with a residual head: restored = x + correction(x), kept to the input's brain."""

    def __init__(self, config: ModelConfig, options: RestoreOptions | None = None):
        super().__init__(config.input_shape, config.stem_channels, config.channels)
        self.config = config
        self.options = options or RestoreOptions()
        #: Restoration passes at inference; a benchmark may change it on a loaded model to compare schedules.
        self.steps = self.options.restore_steps
        self.anomalies = AnomalySettings(
            fraction=self.options.anomaly_fraction,
            max_count=self.options.max_anomalies,
            max_brain_fraction=self.options.max_anomaly_fraction,
        )
        # The correction starts at zero: an untrained model restores nothing (its anomaly map is empty).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brain = (x > 0).to(x.dtype)
        for _ in range(1 if self.training else self.steps):
            x = (x + self.unet(x)) * brain
        return x

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with synthetic anomalies planted in the brain (the target stays the clean ``x``)."""
        corrupted, _ = plant_anomalies(x.float(), self.anomalies)
        return corrupted.to(x.dtype)

    def brain_only_loss(self) -> bool:
        return True

    @torch.no_grad()
    def self_check(self, x: torch.Tensor, brain: torch.Tensor, mean: torch.Tensor | None = None) -> dict:
        """Plant anomalies (a fixed seed) in held-out healthy scans and compare the error left inside them after
        restoration with the error of leaving them as they are: a model that restores nothing (the identity, which
        also reconstructs healthy scans perfectly) does not pass."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            corrupted, weights = plant_anomalies(x.float(), replace(self.anomalies, fraction=1.0))
        planted = (weights > 0) & brain
        if not bool(planted.any()):
            return {"restores_planted_anomalies": None, "note": "no anomaly could be planted"}
        before = float(((corrupted - x) ** 2)[planted].mean())
        after = float(((self(corrupted).float() - x) ** 2)[planted].mean())
        return {
            "planted_mse_unrestored": before,
            "planted_mse_restored": after,
            "restores_planted_anomalies": after < before,
        }


class Restore(Method):
    name = "restore"
    summary = "3D U-Net restoring synthetic anomalies planted in healthy scans (DISYRE family)"
    Options = RestoreOptions
    min_stages = 2
    max_stages = 5

    def build(self, config: ModelConfig) -> nn.Module:
        return RestorationUNet3D(config, config.options)


METHODS = [Restore()]
