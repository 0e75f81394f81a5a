"""The intensity baseline (``intensity``): no learning at all. Its "reconstruction" is zero, so the anomaly map is
the robustly scaled image itself. Lesions are bright on T2/FLAIR: this is the bar a learned model must clear."""

from __future__ import annotations

import torch
from torch import nn

from brainuad.models.base import Method, ModelConfig, TrainingHooks


class IntensityBaseline(TrainingHooks, nn.Module):
    """No learning: reconstructs every volume as zeros, so the anomaly map is the scaled image itself."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class Intensity(Method):
    name = "intensity"
    summary = "no training: the scaled image itself is the anomaly map (the bar to clear)"
    learns = False
    uses_training_data = False

    def build(self, config: ModelConfig) -> nn.Module:
        return IntensityBaseline(config)


INTENSITY = Intensity()
METHODS = [INTENSITY]
