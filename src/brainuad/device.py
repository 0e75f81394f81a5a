"""Where the network runs: ``auto``/``cpu``/``cuda`` names resolved once into a :class:`torch.device`."""

from __future__ import annotations

import torch

from brainuad.errors import BrainuadError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    A :class:`torch.device` is returned as it is (after the same availability check), so every API may be handed
    either the user's word or the device the CLI already resolved.
    """
    if isinstance(name, torch.device):
        if name.type == "cuda" and not torch.cuda.is_available():
            raise BrainuadError("a CUDA device was asked for, but no CUDA GPU is available")
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not str(name).startswith("cuda:"):
        raise BrainuadError(f"unknown device {name!r}: use auto, cpu or cuda")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise BrainuadError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)
