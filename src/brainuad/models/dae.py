"""The denoising autoencoder baseline (``dae``): a 3D U-Net trained to remove coarse, low-resolution Gaussian noise
(Kascenas et al., "Denoising autoencoders for unsupervised anomaly detection in brain MRI", MIDL 2022); skip
connections keep detail, and the coarse noise keeps it from learning the identity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from brainuad.errors import ConfigError
from brainuad.models.base import Method, ModelConfig, TrainingHooks
from brainuad.models.layers import UNet3D


@dataclass(frozen=True)
class DAEOptions:
    """Settings of the ``dae`` model.

    Attributes:
        noise_std: Standard deviation of the coarse training noise (on the 0…1 intensity scale).
        noise_scale: The noise is drawn on a grid this many times coarser per side, then upsampled.
    """

    noise_std: float = 0.2
    noise_scale: int = 8

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.noise_scale < 1:
            raise ConfigError("model.options.noise_std must be >= 0 and model.options.noise_scale >= 1")


class DenoisingUNet3D(TrainingHooks, UNet3D):
    """A 3D U-Net built from the autoencoder's residual blocks, trained on coarse-noise-corrupted input."""

    def __init__(self, config: ModelConfig, options: DAEOptions | None = None):
        super().__init__(config.input_shape, config.stem_channels, config.channels)
        self.config = config
        self.options = options or DAEOptions()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus Gaussian noise drawn on a coarse grid, upsampled, and kept to the foreground (x > 0)."""
        scale = self.options.noise_scale
        coarse_shape = [max(1, -(-s // scale)) for s in x.shape[2:]]
        noise = torch.randn(x.shape[0], 1, *coarse_shape, device=x.device, dtype=torch.float32)
        noise = nn.functional.interpolate(noise, size=x.shape[2:], mode="trilinear", align_corners=False)
        return x + self.options.noise_std * noise.to(x.dtype) * (x > 0)


class DAE(Method):
    name = "dae"
    summary = "denoising U-Net trained to remove coarse noise (Kascenas et al.)"
    Options = DAEOptions

    def build(self, config: ModelConfig) -> nn.Module:
        return DenoisingUNet3D(config, config.options)


METHODS = [DAE()]
