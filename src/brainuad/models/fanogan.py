"""f-AnoGAN (Schlegl et al., Medical Image Analysis 2019) adapted to 3D, as the paper's Table 3 compares it.

Three networks: a generator G(z) (the autoencoder's decoder), a critic D(x) trained with WGAN-GP (no BatchNorm, as
the gradient penalty requires), and an encoder E(x) trained afterwards with G and D frozen (the "izi_f" loss:
image residual plus the residual of the critic's features). The reconstruction is G(E(x)); ``forward`` returns it,
so calibration, detection and evaluation treat f-AnoGAN like any other model. Training is two-stage and lives in
:mod:`brainuad.gan_training`.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from brainuad.config import ModelConfig
from brainuad.models.ae import ResidualDown, ResidualUp, TrainingHooks, conv_act_norm


class _CriticBlock(nn.Module):
    """Down-sampling residual block without normalisation (WGAN-GP's critic must not use BatchNorm)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(out_channels, out_channels, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.shortcut = nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class FAnoGAN3D(TrainingHooks, nn.Module):
    """Generator, critic and encoder; ``forward(x)`` = G(E(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        channels = (config.stem_channels, *config.channels)
        self.bottleneck_shape = tuple(s // 16 for s in config.input_shape)
        flat = channels[-1] * math.prod(self.bottleneck_shape)
        reversed_channels = channels[::-1]
        self.generator = nn.ModuleDict(
            {
                "from_latent": nn.Linear(config.latent, flat),
                "decoder": nn.Sequential(*[ResidualUp(a, b) for a, b in itertools.pairwise(reversed_channels)]),
                "head": nn.Conv3d(config.stem_channels, 1, 1),
            }
        )
        self.critic = nn.ModuleDict(
            {
                "features": nn.Sequential(
                    nn.Conv3d(1, config.stem_channels, 3, padding=1),
                    nn.LeakyReLU(0.2),
                    *[_CriticBlock(a, b) for a, b in itertools.pairwise(channels)],
                ),
                "score": nn.Linear(flat, 1),
            }
        )
        self.encoder = nn.ModuleDict(
            {
                "features": nn.Sequential(
                    conv_act_norm(nn.Conv3d(1, config.stem_channels, 3, padding=1), config.stem_channels),
                    *[ResidualDown(a, b) for a, b in itertools.pairwise(channels)],
                ),
                "to_latent": nn.Linear(flat, config.latent),
            }
        )

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): latent codes → volumes."""
        features = self.generator["from_latent"](z).view(z.shape[0], -1, *self.bottleneck_shape)
        return self.generator["head"](self.generator["decoder"](features))

    def critic_features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the critic's last feature map, flattened (used by the izi_f loss)."""
        return self.critic["features"](x).flatten(1)

    def critique(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): the Wasserstein critic's score, one per volume."""
        return self.critic["score"](self.critic_features(x)).squeeze(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): volumes → latent codes."""
        expected = (1, *self.config.input_shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        return self.encoder["to_latent"](self.encoder["features"](x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generate(self.encode(x))
