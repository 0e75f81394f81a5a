"""Where the network runs: ``auto``/``cpu``/``cuda`` names resolved once into a :class:`torch.device`; the ranks of a
torchrun (DDP) job."""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

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


def distributed() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; initialises the process group when needed."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise BrainuadError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; unset it") from None
    if world <= 1:
        return 0, 1
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise BrainuadError(
            f"WORLD_SIZE={world} is set but {', '.join(missing)} not: start several processes with "
            "'torchrun --nproc_per_node=N -m brainuad train …', or unset WORLD_SIZE for one process"
        )
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (to compare DDP ranks)."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ranks_in_sync(model: nn.Module, world: int) -> bool | None:
    """Whether every rank holds the same weights (DDP only)."""
    if world <= 1:
        return None
    import torch.distributed as dist

    digests: list[str | None] = [None] * world
    dist.all_gather_object(digests, weights_digest(model))
    return len(set(digests)) == 1
