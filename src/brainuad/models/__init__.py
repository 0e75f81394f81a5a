"""The models: one module per method, each holding its ``nn.Module``, its own settings and its training behaviour
(the contract: :mod:`brainuad.models.base`; found by name: :mod:`brainuad.models.base`).

Importing this package is light (no torch): the config tree and the CLI read the contract; the networks are
imported when a method is first looked up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from brainuad.models.base import ModelConfig


def build_model(config: ModelConfig) -> nn.Module:
    """The network a model config describes (randomly initialised), built by its registered method."""
    from brainuad.models.base import get_method

    return get_method(config.kind).build(config)


def __getattr__(name: str) -> Any:
    # Lazy: `from brainuad.models import count_parameters` imports torch only when asked for.
    if name == "count_parameters":
        from brainuad.models.layers import count_parameters

        return count_parameters
    raise AttributeError(f"module 'brainuad.models' has no attribute {name!r}")


__all__ = ["build_model", "count_parameters"]
