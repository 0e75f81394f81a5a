"""Building blocks shared by the networks: the published code's conv → LeakyReLU → norm unit and its residual
down/up blocks."""

from __future__ import annotations

import math

import torch
from torch import nn


def make_norm(channels: int, norm: str = "batch") -> nn.Module:
    """BatchNorm (the published code's) or GroupNorm (independent of the batch size: up to 8 groups)."""
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.BatchNorm3d(channels)


def conv_act_norm(conv: nn.Module, channels: int, norm: str = "batch") -> nn.Sequential:
    """The published code's unit: convolution, then LeakyReLU(0.2), then BatchNorm (or GroupNorm)."""
    return nn.Sequential(conv, nn.LeakyReLU(0.2, inplace=True), make_norm(channels, norm))


class ResidualDown(nn.Module):
    """Halves the resolution: conv3 s1 → conv3 s2 on the main path, strided conv3 on the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.main = nn.Sequential(
            conv_act_norm(nn.Conv3d(in_channels, out_channels, 3, stride=1, padding=1), out_channels, norm),
            conv_act_norm(nn.Conv3d(out_channels, out_channels, 3, stride=2, padding=1), out_channels, norm),
        )
        self.shortcut = conv_act_norm(nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1), out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class ResidualUp(nn.Module):
    """Doubles the resolution: transposed conv k4 s2 → conv3 s1 on the main path, transposed conv on the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.main = nn.Sequential(
            conv_act_norm(nn.ConvTranspose3d(in_channels, out_channels, 4, stride=2, padding=1), out_channels, norm),
            conv_act_norm(nn.Conv3d(out_channels, out_channels, 3, stride=1, padding=1), out_channels, norm),
        )
        self.shortcut = conv_act_norm(
            nn.ConvTranspose3d(in_channels, out_channels, 4, stride=2, padding=1), out_channels, norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
