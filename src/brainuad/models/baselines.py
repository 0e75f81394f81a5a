"""The baselines the paper and the literature compare against, as ``nn.Module``s with the autoencoder's interface.

- :class:`VariationalAutoencoder3D` (``vae``): the residual network with a dense Gaussian latent (Baur et al.'s
  VAE adapted to 3D); reconstructs from the posterior mean at inference.
- :class:`DenoisingUNet3D` (``dae``): a U-Net trained to remove coarse, low-resolution Gaussian noise (Kascenas et
  al., "Denoising autoencoders for unsupervised anomaly detection in brain MRI", MIDL 2022); skip connections keep
  detail, and the coarse noise keeps it from learning the identity.
- :class:`IntensityBaseline` (``intensity``): no network at all; its "reconstruction" is zero, so the residual is
  the robustly scaled image itself. Lesions are bright on T2/FLAIR: this is the bar a learned model must clear.

All take ``(batch, 1, *input_shape)`` and return a reconstruction of the same shape.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from brainuad.config import ModelConfig
from brainuad.models.ae import ResidualAutoencoder3D, ResidualDown, ResidualUp, TrainingHooks, conv_act_norm

#: log-variance is clamped to keep exp() finite in bf16 and early training.
LOGVAR_RANGE = (-10.0, 10.0)


class VariationalAutoencoder3D(ResidualAutoencoder3D):
    """Residual encoder/decoder with a dense Gaussian latent ``z ~ N(mu, exp(logvar))``."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        flat = self.from_latent.out_features
        self.to_latent = nn.Linear(flat, 2 * config.latent)
        self._kl: torch.Tensor | None = None

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean and log-variance, each ``(batch, latent)``."""
        mu, logvar = super().encode(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean (the code used for reconstruction at inference)."""
        return self.encode_distribution(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encode_distribution(x)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
            self._kl = kl.float() / x[0].numel()  # per voxel, so it sits on the MSE's scale
        else:
            z = mu
        return self.decode(z)

    def regulariser(self) -> torch.Tensor | None:
        kl, self._kl = self._kl, None
        return None if kl is None else self.config.kl_weight * kl


class DenoisingUNet3D(TrainingHooks, nn.Module):
    """A 3D U-Net built from the autoencoder's residual blocks, trained on coarse-noise-corrupted input."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        channels = (config.stem_channels, *config.channels)
        self.stem = conv_act_norm(nn.Conv3d(1, config.stem_channels, 3, padding=1), config.stem_channels)
        self.down = nn.ModuleList(ResidualDown(a, b) for a, b in itertools.pairwise(channels))
        reversed_channels = channels[::-1]
        self.up = nn.ModuleList(ResidualUp(a, b) for a, b in itertools.pairwise(reversed_channels))
        # After each up block the matching encoder feature map is concatenated, then fused back to b channels.
        self.fuse = nn.ModuleList(conv_act_norm(nn.Conv3d(2 * b, b, 3, padding=1), b) for b in reversed_channels[1:])
        self.head = nn.Conv3d(config.stem_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (1, *self.config.input_shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        features = [self.stem(x)]
        for block in self.down:
            features.append(block(features[-1]))
        h = features.pop()
        for block, fuse in zip(self.up, self.fuse):
            h = fuse(torch.cat([block(h), features.pop()], dim=1))
        return self.head(h)

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus Gaussian noise drawn on a coarse grid, upsampled, and kept to the foreground (x > 0)."""
        scale = self.config.noise_scale
        coarse_shape = [max(1, -(-s // scale)) for s in x.shape[2:]]
        noise = torch.randn(x.shape[0], 1, *coarse_shape, device=x.device, dtype=torch.float32)
        noise = nn.functional.interpolate(noise, size=x.shape[2:], mode="trilinear", align_corners=False)
        return x + self.config.noise_std * noise.to(x.dtype) * (x > 0)


class IntensityBaseline(TrainingHooks, nn.Module):
    """No learning: reconstructs every volume as zeros, so the anomaly map is the scaled image itself."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)
