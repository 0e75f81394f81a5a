"""The normative baseline (``normative``): voxel-wise centre and spread of the healthy training cohort, no network.

Its reconstruction of every scan is the cohort centre, so the anomaly map is |x − centre| (or, with
``model.normative_score = "z"``, the z-score |x − centre| / spread). It knows population anatomy and nothing about the
individual: a learned model exists to beat it. The centre and spread are buffers, saved as safetensors like any
weights; ``fit_cohort`` fills them at ``train`` time (``brainuad.cohort`` computes them).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from brainuad.config import ModelConfig
from brainuad.models.ae import TrainingHooks


class NormativeModel(TrainingHooks, nn.Module):
    """Cohort centre as the reconstruction; cohort spread for z-scores.

    Args:
        config: Model section (``input_shape``, ``normative_centre``, ``normative_score``, ``normative_floor``).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("centre", torch.zeros(config.input_shape))
        self.register_buffer("spread", torch.ones(config.input_shape))
        self.register_buffer("fitted", torch.zeros(()))  # 1 once fitted (float: weights files hold floats)

    def fit_cohort(self, volumes: np.ndarray, indices: list[int] | None = None) -> None:
        """Set centre and spread from the training cohort: rows ``indices`` of ``(n, *input_shape)`` ``volumes`` (a
        memory map is fine)."""
        from brainuad.cohort import cohort_centre_spread

        config = self.config
        centre, spread = cohort_centre_spread(volumes, config.normative_centre, config.normative_floor, indices)
        self.centre.copy_(torch.from_numpy(centre))
        self.spread.copy_(torch.from_numpy(spread))
        self.fitted.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if int(self.fitted) != 1:
            raise RuntimeError("the normative model was never fitted to a cohort (run 'brainuad train' first)")
        return self.centre.to(x.dtype).expand_as(x).clone()

    def residual_scale(self) -> np.ndarray | None:
        """What the residual |x − centre| is divided by in the anomaly map: the spread for z-scores, else ``None``."""
        return self.spread.cpu().numpy() if self.config.normative_score == "z" else None
