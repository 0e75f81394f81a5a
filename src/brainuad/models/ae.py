"""Luo et al.'s 3D residual autoencoder: dense latent (the paper's) and spatial latent (its ablation).

Pure ``nn.Module``s: no paths, no optimisers, no data handling.

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

from brainuad.config import ModelConfig


def make_norm(channels: int, norm: str = "batch") -> nn.Module:
    """BatchNorm (the published code's) or GroupNorm (independent of the batch size: up to 8 groups)."""
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.BatchNorm3d(channels)


def conv_act_norm(conv: nn.Module, channels: int, norm: str = "batch") -> nn.Sequential:
    """The published code's unit: convolution, then LeakyReLU(0.2), then BatchNorm (or GroupNorm)."""
    return nn.Sequential(conv, nn.LeakyReLU(0.2, inplace=True), make_norm(channels, norm))


class ResidualDown(nn.Module):
    """Halves the resolution: conv3 s1 → conv3 s2 on the main path, strided conv3 on the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.main = nn.Sequential(
            conv_act_norm(nn.Conv3d(in_channels, out_channels, 3, stride=1, padding=1), out_channels, norm),
            conv_act_norm(nn.Conv3d(out_channels, out_channels, 3, stride=2, padding=1), out_channels, norm),
        )
        self.shortcut = conv_act_norm(nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1), out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class ResidualUp(nn.Module):
    """Doubles the resolution: transposed conv k4 s2 → conv3 s1 on the main path, transposed conv on the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.main = nn.Sequential(
            conv_act_norm(nn.ConvTranspose3d(in_channels, out_channels, 4, stride=2, padding=1), out_channels, norm),
            conv_act_norm(nn.Conv3d(out_channels, out_channels, 3, stride=1, padding=1), out_channels, norm),
        )
        self.shortcut = conv_act_norm(
            nn.ConvTranspose3d(in_channels, out_channels, 4, stride=2, padding=1), out_channels, norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class TrainingHooks:
    """What the training loop asks of every model; the defaults suit a plain autoencoder."""

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the network sees in a training step (the target is always ``x``); the denoising AE corrupts it."""
        return x

    def regulariser(self) -> torch.Tensor | None:
        """An extra loss term from the last training forward pass (the VAE's KL divergence), or ``None``."""
        return None


class ResidualAutoencoder3D(TrainingHooks, nn.Module):
    """The 3D residual autoencoder, with a dense or a spatial latent.

    Args:
        config: Model section of the config (kind, latent sizes, channels, input shape).

    Input and output: ``(batch, 1, *config.input_shape)``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
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
        if config.kind in ("ae", "vae"):
            self.to_latent: nn.Module = nn.Linear(flat, config.latent)
            self.from_latent: nn.Module = nn.Linear(config.latent, flat)
        elif config.kind == "spatial-ae":
            self.to_latent = nn.Conv3d(deepest, config.spatial_channels, 1)
            self.from_latent = nn.Conv3d(config.spatial_channels, deepest, 1)
        else:
            raise ValueError(f"unknown model kind {config.kind!r}")
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
        if self.config.kind != "spatial-ae":
            return self.to_latent(features.flatten(1))
        return self.to_latent(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent code → reconstructed volume."""
        features = self.from_latent(z)
        if self.config.kind != "spatial-ae":
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


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
