"""Luo et al.'s 3D residual autoencoder: dense latent (the paper's) and spatial latent (its ablation).

The network and its two registered methods (``ae``, ``spatial-ae``); no paths, optimisers or data handling.

Layout (published code, paper preset 160×192×96):
    stem      conv3 s1 (1→16) → LeakyReLU(0.2) → BatchNorm
    encoder   4 residual down blocks 16→32→64→128→256, each: main conv3 s1 → conv3 s2, shortcut conv3 s2
              (every conv → LeakyReLU(0.2) → BatchNorm), outputs summed          → 256×10×12×6
    latent    dense: flatten → Linear → z (512) → Linear → 256×10×12×6
              spatial: 1×1×1 conv 256→C → 1×1×1 conv C→256
    decoder   4 residual up blocks 256→128→64→32→16 (transposed conv k4 s2 on both paths) → 1×1×1 conv → 1 channel
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from brainuad.models.base import Method, ModelConfig, TrainingHooks
from brainuad.models.layers import ResidualDown, ResidualUp, conv_act_norm


class ResidualAutoencoder3D(TrainingHooks, nn.Module):
    """The 3D residual autoencoder, with a dense or a spatial latent.

    Args:
        config: Model section of the config (latent sizes, channels, input shape, pooling, mean skip, norm).
        spatial_latent: A 1×1×1-convolution latent of ``config.spatial_channels`` channels at the bottleneck's
            resolution instead of the dense ``config.latent`` vector.

    Input and output: ``(batch, 1, *config.input_shape)``.
    """

    def __init__(self, config: ModelConfig, spatial_latent: bool = False):
        super().__init__()
        self.config = config
        self.spatial_latent = spatial_latent
        channels = (config.stem_channels, *config.channels)
        factor = config.input_pool * 2 ** len(config.channels)
        self.bottleneck_shape = tuple(s // factor for s in config.input_shape)
        norm = config.norm
        self.stem = conv_act_norm(
            nn.Conv3d(1, config.stem_channels, 3, stride=1, padding=1), config.stem_channels, norm
        )
        self.encoder = nn.Sequential(*[ResidualDown(a, b, norm) for a, b in itertools.pairwise(channels)])
        deepest = channels[-1]
        flat = deepest * math.prod(self.bottleneck_shape)
        if spatial_latent:
            self.to_latent: nn.Module = nn.Conv3d(deepest, config.spatial_channels, 1)
            self.from_latent: nn.Module = nn.Conv3d(config.spatial_channels, deepest, 1)
        else:
            self.to_latent = nn.Linear(flat, config.latent)
            self.from_latent = nn.Linear(config.latent, flat)
        reversed_channels = channels[::-1]
        self.decoder = nn.Sequential(*[ResidualUp(a, b, norm) for a, b in itertools.pairwise(reversed_channels)])
        self.head = nn.Conv3d(config.stem_channels, 1, 1)
        if config.mean_skip:
            # The output is the cohort mean image plus the decoder's deviation from it: the head starts at zero, so
            # an untrained model already reconstructs the average brain and training only learns the individual.
            self.register_buffer("mean_image", torch.zeros(1, 1, *config.input_shape))
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def set_mean_image(self, mean: torch.Tensor) -> None:
        """Store the training cohort's mean image (``mean_skip`` models; saved with the weights)."""
        if not self.config.mean_skip:
            raise ValueError("set_mean_image needs a model built with model.mean_skip = true")
        self.mean_image.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(self.mean_image.shape))

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (1, *self.config.input_shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Volume → latent code (``(batch, latent)`` dense, ``(batch, C, *bottleneck)`` spatial)."""
        self._check_input(x)
        if self.config.input_pool > 1:
            x = nn.functional.avg_pool3d(x, self.config.input_pool)
        features = self.encoder(self.stem(x))
        if not self.spatial_latent:
            return self.to_latent(features.flatten(1))
        return self.to_latent(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent code → reconstructed volume."""
        features = self.from_latent(z)
        if not self.spatial_latent:
            features = features.view(z.shape[0], -1, *self.bottleneck_shape)
            features = features.contiguous(memory_format=torch.channels_last_3d) if z.is_cuda else features
        out = self.head(self.decoder(features))
        if self.config.input_pool > 1:
            out = nn.functional.interpolate(out, scale_factor=self.config.input_pool, mode="trilinear")
        if self.config.mean_skip:
            out = out + self.mean_image.to(out.dtype)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class DenseAE(Method):
    """Luo et al.'s network: a dense latent of ``model.latent`` values."""

    name = "ae"
    summary = "Luo et al.'s 3D residual autoencoder, dense latent (the paper's)"
    family = "residual-ae"
    refuses = ()
    min_stages, max_stages = 2, 5
    spatial = False

    def build(self, config: ModelConfig) -> nn.Module:
        return ResidualAutoencoder3D(config, spatial_latent=self.spatial)

    def prepare(self, model: nn.Module, volumes, train_ids: list[int]) -> None:
        if model.config.mean_skip:
            from brainuad.models.cohort import cohort_mean

            model.set_mean_image(torch.from_numpy(cohort_mean(volumes, train_ids)))


class SpatialAE(DenseAE):
    """The paper's ablation: a spatial latent of ``model.spatial_channels`` channels at 1/16 resolution."""

    name = "spatial-ae"
    summary = "the residual autoencoder with a spatial latent (the paper's ablation)"
    spatial = True


#: The two latent variants of the paper's ablation (``brainuad ablate``).
DENSE, SPATIAL = DenseAE(), SpatialAE()
METHODS = [DENSE, SPATIAL]
