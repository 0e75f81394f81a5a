"""Weights and optimiser state in safetensors, configs in JSON: nothing is ever unpickled.

A run folder's model is ``config.json`` + ``model.safetensors``; :func:`load_model` validates the config against the
schema and refuses weights that do not fit the network the config describes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from brainuad.config import Config, config_from_json, to_dict
from brainuad.errors import BrainuadError, ConfigError, InputError
from brainuad.io.volumes import atomic_path, read_json, write_json


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a model's state (parameters and BatchNorm buffers) as safetensors, atomically."""
    return save_state_dict(_unwrap(model).state_dict(), path, metadata)


def save_state_dict(
    state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write a state dict (tensors anywhere) as safetensors, atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        # An empty metadata dict makes an unreadable file when there are no tensors (safetensors bug): pass None.
        save_file(state, str(tmp), metadata=metadata or None)
    return Path(path)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into ``model``; a mismatch in names or shapes is a clear error."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable safetensors file ({exc})") from exc
    _check_values(path, state)
    target = _unwrap(model).state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            detail.append(f"shape of {k}: file {tuple(state[k].shape)} vs config {tuple(target[k].shape)}")
        raise InputError(path, "weights do not match the model its config describes: " + "; ".join(detail))
    # load_state_dict would silently cast integer tensors into float parameters: not a usable model.
    cast = [k for k in target if target[k].is_floating_point() and not state[k].is_floating_point()]
    if cast:
        k = cast[0]
        raise InputError(path, f"tensor {k} is stored as {state[k].dtype}; the model needs {target[k].dtype}")
    _unwrap(model).load_state_dict(state)
    return model


def _check_values(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Weights must be float16/bfloat16/float32 (integer counters aside) and finite: shipped fp16 files included."""
    for key, tensor in state.items():
        if tensor.dtype in (torch.int64, torch.int32):
            continue
        if tensor.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise InputError(path, f"tensor {key} has dtype {tensor.dtype}; expected float16, bfloat16 or float32")
        if not torch.isfinite(tensor).all():
            raise InputError(path, f"tensor {key} holds NaN or infinite values")


#: Largest network a config may declare (float32 parameters and buffers); the shipped models hold 8 MB.
MAX_MODEL_BYTES = 8 * 1024**3


def _check_declared_sizes(config: Config, weights_path: Path) -> None:
    """Compare the network the config declares with the weights' shapes *before* allocating it: a config declaring
    a huge layer would otherwise build gigabytes of parameters only to find they do not fit."""
    from safetensors import safe_open

    from brainuad.models import build_model

    try:
        with torch.device("meta"):
            target = {k: tuple(v.shape) for k, v in build_model(config.model).state_dict().items()}
    except Exception:  # no meta build: building it for real reports the problem
        return
    # The config's own sizes first: a network this large is refused whatever the weights file holds (a weights file
    # whose header cannot be read no longer lets a config ask for terabytes).
    size = sum(int(np.prod(shape, dtype=np.int64)) for shape in target.values()) * 4
    if size > MAX_MODEL_BYTES:
        raise InputError(
            weights_path.parent / "config.json",
            f"declares a network of {size / 1024**3:.1f} GiB of parameters (over {MAX_MODEL_BYTES / 1024**3:.0f} "
            "GiB); refusing to build it",
        )
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            stored = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise InputError(weights_path, f"not a readable safetensors file ({exc})") from exc
    wrong = sorted(k for k in set(target) | set(stored) if target.get(k) != stored.get(k))
    if wrong:
        k = wrong[0]
        raise InputError(
            weights_path.parent / "config.json",
            f"declares a network that the weights in {weights_path.name} do not match ({len(wrong)} tensors differ, "
            f"e.g. {k}: config {target.get(k)} vs file {stored.get(k)}); refusing to build it",
        )


#: Optimiser settings that choose an implementation, not a result: taken from the optimiser being restored.
_IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")


def save_optimizer(optimizer: torch.optim.Optimizer, path: str | Path) -> Path:
    """Optimiser state as safetensors: tensors flattened by name, the rest as JSON metadata."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    metadata = {"param_groups": json.dumps(state_dict["param_groups"]), "scalars": json.dumps(scalars)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_optimizer(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Restore optimiser state written by :func:`save_optimizer`."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable safetensors file ({exc})") from exc
    try:
        param_groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata.get("scalars", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise InputError(path, "optimizer file lacks its param_groups metadata") from exc
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in scalars.items():
        state.setdefault(int(index), {}).update(values)
    # How the update runs (a fused CUDA kernel, foreach) belongs to this device, not to the one that saved the run.
    for saved, current in zip(param_groups, optimizer.param_groups):
        for key in _IMPLEMENTATION_FLAGS:
            if key in current:
                saved[key] = current[key]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    device = params[0].device if params else torch.device("cpu")
    for index, entry in state.items():
        param = params[index] if 0 <= index < len(params) else None
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor) or key == "step":
                continue
            if param is not None and value.shape == param.shape:
                # The moments in the parameter's own layout (channels-last on CUDA; saved contiguous): the fused
                # kernel refuses a mismatch on CUDA and, on the CPU, would pair the wrong elements.
                entry[key] = torch.empty_like(param).copy_(value)
            else:
                entry[key] = value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def save_config(config: Config, path: str | Path) -> Path:
    """The config tree as JSON."""
    return write_json(path, to_dict(config))


def load_config(path: str | Path) -> Config:
    """Read and validate a config JSON (unknown keys and wrong types are errors naming the file); files of older
    brainuad versions are upgraded (:func:`brainuad.config.config_from_json`), newer formats refused naming theirs."""
    path = Path(path)
    try:
        return config_from_json(read_json(path))
    except ConfigError as exc:
        raise InputError(path, f"invalid config: {exc}") from exc


def load_model(run_dir: str | Path, weights: str = "model.safetensors", device: str | torch.device = "cpu"):
    """The trained model of a run folder (or ``builtin:NAME``), in eval mode (BatchNorm uses its learned statistics).

    Float16 weights (the shipped models') are cast to float32 on load.

    Raises:
        InputError: Missing files, an invalid config, or weights that do not fit the config.
    """
    from brainuad.io.shipped import resolve_model_dir
    from brainuad.models import build_model
    from brainuad.train.device import resolve_device

    device = resolve_device(device)  # "auto" is a word for users, never a torch device
    run_dir = resolve_model_dir(run_dir)  # builtin:NAME → the installed folder
    if not run_dir.is_dir():
        raise InputError(run_dir, "model folder not found")
    config = load_config(run_dir / "config.json")
    weights_path = run_dir / weights
    if not weights_path.is_file():
        raise InputError(weights_path, "weights file not found (was training finished?)")
    _check_declared_sizes(config, weights_path)
    try:
        model = build_model(config.model)
    except (ValueError, RuntimeError) as exc:
        raise BrainuadError(f"{run_dir / 'config.json'}: cannot build the model ({exc})") from exc
    load_weights(model, weights_path)
    return model.to(device).eval(), config


class Checkpointer:
    """A training run's checkpoints, written at most every ``minutes`` of wall time (and when asked to).

    A checkpoint is ``last.safetensors`` + ``last_optimizer.safetensors`` + ``state.json`` (written last: it marks the
    checkpoint complete) and, when validation improved since the previous checkpoint, ``model.safetensors``. The best
    weights wait on the device until then, so an improvement costs a copy in device memory, not a file write.

    Args:
        run_dir: The run folder.
        model: The model being trained (plain, DDP or compiled).
        optimizer: Its optimiser.
        minutes: Wall-time interval; 0 writes at every :meth:`maybe_save`.
        enabled: ``False`` on DDP ranks other than 0 (they write nothing).
    """

    def __init__(
        self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, minutes: float, enabled: bool = True
    ):
        self.run_dir, self.model, self.optimizer = Path(run_dir), _unwrap(model), optimizer
        self.seconds, self.enabled = minutes * 60.0, enabled
        self.best: dict[str, torch.Tensor] | None = None
        self.last_saved = time.monotonic()

    def keep_best(self) -> None:
        """Remember the current weights as the best (a device copy)."""
        if self.enabled:
            self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def maybe_save(self, state: dict, force: bool = False) -> bool:
        """Write a checkpoint if ``minutes`` have passed since the last one (or ``force``); whether it wrote."""
        if not self.enabled or not (force or time.monotonic() - self.last_saved >= self.seconds):
            return False
        if self.best is not None:
            save_state_dict(self.best, self.run_dir / "model.safetensors")
            self.best = None
        save_weights(self.model, self.run_dir / "last.safetensors")
        save_optimizer(self.optimizer, self.run_dir / "last_optimizer.safetensors")
        write_json(self.run_dir / "state.json", state)
        self.last_saved = time.monotonic()
        return True
