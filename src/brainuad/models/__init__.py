"""Network definitions: ``nn.Module``s only (no paths, optimisers or data)."""

from __future__ import annotations

from torch import nn

from brainuad.config import ModelConfig
from brainuad.models.ae import ResidualAutoencoder3D, count_parameters
from brainuad.models.baselines import DenoisingUNet3D, IntensityBaseline, VariationalAutoencoder3D
from brainuad.models.fanogan import FAnoGAN3D
from brainuad.models.normative import NormativeModel

#: Kinds that have weights to learn (``intensity`` has none; ``normative`` is fitted to the cohort, not trained).
TRAINABLE_KINDS = ("ae", "spatial-ae", "vae", "dae", "fanogan")


def build_model(config: ModelConfig) -> nn.Module:
    """The network a model config describes (randomly initialised)."""
    if config.kind in ("ae", "spatial-ae"):
        return ResidualAutoencoder3D(config)
    if config.kind == "vae":
        return VariationalAutoencoder3D(config)
    if config.kind == "dae":
        return DenoisingUNet3D(config)
    if config.kind == "fanogan":
        return FAnoGAN3D(config)
    if config.kind == "intensity":
        return IntensityBaseline(config)
    if config.kind == "normative":
        return NormativeModel(config)
    raise ValueError(f"unknown model kind {config.kind!r}")


__all__ = [
    "TRAINABLE_KINDS",
    "DenoisingUNet3D",
    "FAnoGAN3D",
    "IntensityBaseline",
    "NormativeModel",
    "ResidualAutoencoder3D",
    "VariationalAutoencoder3D",
    "build_model",
    "count_parameters",
]
