"""Network definitions: ``nn.Module``s only (no paths, optimisers or data)."""

from brainuad.models.ae import ResidualAutoencoder3D, build_model, count_parameters

__all__ = ["ResidualAutoencoder3D", "build_model", "count_parameters"]
