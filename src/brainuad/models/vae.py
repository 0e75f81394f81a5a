"""The variational autoencoder baseline (``vae``): the residual network with a dense Gaussian latent (Baur et al.'s
VAE adapted to 3D); it reconstructs from the posterior mean at inference and adds the KL term to the training loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from brainuad.errors import ConfigError
from brainuad.models.ae import ResidualAutoencoder3D
from brainuad.models.base import Method, ModelConfig

#: log-variance is clamped to keep exp() finite in bf16 and early training.
LOGVAR_RANGE = (-10.0, 10.0)


@dataclass(frozen=True)
class VAEOptions:
    """Settings of the ``vae`` model.

    Attributes:
        kl_weight: Weight of the KL term, per voxel (the loss is MSE + kl_weight × KL / voxels).
    """

    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kl_weight < 0:
            raise ConfigError("model.options.kl_weight must be >= 0")


class VariationalAutoencoder3D(ResidualAutoencoder3D):
    """Residual encoder/decoder with a dense Gaussian latent ``z ~ N(mu, exp(logvar))``."""

    def __init__(self, config: ModelConfig, options: VAEOptions | None = None):
        super().__init__(config)
        self.kl_weight = (options or VAEOptions()).kl_weight
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
        return None if kl is None else self.kl_weight * kl


class VAE(Method):
    name = "vae"
    summary = "variational autoencoder, dense Gaussian latent (Baur et al.)"
    Options = VAEOptions

    def build(self, config: ModelConfig) -> nn.Module:
        return VariationalAutoencoder3D(config, config.options)


METHODS = [VAE()]
