"""The normative baseline (``normative``): voxel-wise centre and spread of the healthy training cohort, no network.

Its reconstruction of every scan is the cohort centre, so the anomaly map is |x − centre| (or, with
``model.options.normative_score = "z"``, the z-score |x − centre| / spread). It knows population anatomy and nothing
about the individual: a learned model exists to beat it. The centre and spread are buffers, saved as safetensors like
any weights; ``fit_cohort`` fills them at ``train`` time (``brainuad.models.cohort`` computes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from brainuad.errors import ConfigError
from brainuad.models.base import Method, ModelConfig, TrainingHooks


@dataclass(frozen=True)
class NormativeOptions:
    """Settings of the ``normative`` model.

    Attributes:
        normative_centre: Voxel-wise ``median`` (spread = 1.4826 × MAD) or ``mean`` (spread = SD).
        normative_score: Anomaly map ``abs`` = |x − centre| or ``z`` = |x − centre| / spread.
        normative_floor: Lower bound of the spread (0…1 intensity scale), keeping z-scores finite.
    """

    normative_centre: Literal["median", "mean"] = "median"
    normative_score: Literal["abs", "z"] = "abs"
    normative_floor: float = 0.02

    def __post_init__(self) -> None:
        if self.normative_floor <= 0:
            raise ConfigError("model.options.normative_floor must be > 0")


class NormativeModel(TrainingHooks, nn.Module):
    """Cohort centre as the reconstruction; cohort spread for z-scores.

    Args:
        config: Model section (``input_shape``).
        options: Centre, score and spread floor.
    """

    def __init__(self, config: ModelConfig, options: NormativeOptions | None = None):
        super().__init__()
        self.config = config
        self.options = options or NormativeOptions()
        self.register_buffer("centre", torch.zeros(config.input_shape))
        self.register_buffer("spread", torch.ones(config.input_shape))
        self.register_buffer("fitted", torch.zeros(()))  # 1 once fitted (float: weights files hold floats)

    def fit_cohort(self, volumes: np.ndarray, indices: list[int] | None = None) -> None:
        """Set centre and spread from the training cohort: rows ``indices`` of ``(n, *input_shape)`` ``volumes`` (a
        memory map is fine)."""
        from brainuad.models.cohort import cohort_centre_spread

        options = self.options
        centre, spread = cohort_centre_spread(volumes, options.normative_centre, options.normative_floor, indices)
        self.centre.copy_(torch.from_numpy(centre))
        self.spread.copy_(torch.from_numpy(spread))
        self.fitted.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if int(self.fitted) != 1:
            raise RuntimeError("the normative model was never fitted to a cohort (run 'brainuad train' first)")
        return self.centre.to(x.dtype).expand_as(x).clone()

    def residual_scale(self) -> np.ndarray | None:
        """What the residual |x − centre| is divided by in the anomaly map: the spread for z-scores, else ``None``."""
        return self.spread.cpu().numpy() if self.options.normative_score == "z" else None


class Normative(Method):
    name = "normative"
    summary = "no training: voxel-wise centre and spread of the healthy training scans"
    Options = NormativeOptions
    learns = False

    def build(self, config: ModelConfig) -> nn.Module:
        return NormativeModel(config, config.options)

    def prepare(self, model: nn.Module, volumes, train_ids: list[int]) -> None:
        model.fit_cohort(volumes, train_ids)


METHODS = [Normative()]
