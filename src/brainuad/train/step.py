"""One optimisation step of the autoencoders: bf16 autocast, channels-last-3d and ``torch.compile`` on CUDA.

The step returns its loss as a device tensor: the loop adds them up and reads the sum once per epoch, so nothing
inside an epoch waits for the GPU.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from brainuad.config import TrainConfig


def compile_enabled(tc: TrainConfig, device: torch.device) -> bool:
    """``training.compile``: ``None`` (the default) compiles on CUDA only."""
    return device.type == "cuda" if tc.compile is None else bool(tc.compile)


def learning_rate(tc: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at a (0-based) optimiser step: linear warm-up, then constant or cosine decay to zero."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "cosine":
        progress = (step - tc.warmup_steps) / max(1, total_steps - tc.warmup_steps)
        return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return tc.lr


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, brain_only: bool = False) -> torch.Tensor:
    """Mean squared error over the volume, or over the brain only (target > 0: preprocessed scans are zero outside
    the brain; a mask product, not indexing, so the GPU never waits on a voxel count)."""
    if not brain_only:
        return nn.functional.mse_loss(output, target)
    inside = (target > 0).to(output.dtype)
    return ((output - target) ** 2 * inside).sum() / inside.sum().clamp_min(1.0)


class TrainStep:
    """Forward, MSE loss (+ the model's regulariser), backward and an optimiser step.

    Args:
        model: The plain model (its ``training_input`` and ``regulariser`` are used).
        step_model: What runs the forward pass: ``model`` or its DDP wrapper.
        optimizer: Updates ``model``'s parameters.
        tc: Training settings (bf16, channels_last, compile).
        device: Where the model lives.
    """

    def __init__(
        self, model: nn.Module, step_model: nn.Module, optimizer: torch.optim.Optimizer, tc: TrainConfig, device
    ):
        cuda = device.type == "cuda"
        self.model, self.eager, self.optimizer = model, step_model, optimizer
        self.brain_only = tc.loss_mask or model.brain_only_loss()
        self.channels_last = cuda and tc.channels_last
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and tc.bf16)
        self.compiled = compile_enabled(tc, device)
        self.forward = torch.compile(step_model, dynamic=False) if self.compiled else step_model
        self.proven = not self.compiled  # the first compiled step may still fail and fall back to eager
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution once

    def _loss_and_backward(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            loss = reconstruction_loss(self.forward(inputs).float(), target, self.brain_only)
            extra = self.model.regulariser()
            if extra is not None:
                loss = loss + extra
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def __call__(self, batch: torch.Tensor, seed: int) -> torch.Tensor:
        """One step on ``batch``; ``seed`` seeds the step's own randomness (DAE noise, VAE sampling).

        Returns:
            The loss, detached, on the device (no synchronisation).
        """
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last_3d)
        # Seeded per step (not carried in the RNG state), so the DAE's noise and the VAE's sampling replay
        # identically after --resume.
        torch.manual_seed(seed)
        inputs = self.model.training_input(batch)
        if self.proven:
            loss = self._loss_and_backward(inputs, batch)
        else:
            try:
                loss = self._loss_and_backward(inputs, batch)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:
                warnings.warn(
                    f"torch.compile failed ({type(exc).__name__}: {str(exc)[:300]}); training without compiling "
                    "(pass --no-compile to skip the attempt)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.forward, self.compiled = self.eager, False
                loss = self._loss_and_backward(inputs, batch)
            self.proven = True
        self.optimizer.step()
        return loss.detach()
