"""Building blocks shared by the networks: the published code's conv → LeakyReLU → norm unit and its residual
down/up blocks."""

from __future__ import annotations

import itertools
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


class UNet3D(nn.Module):
    """A 3D U-Net of the residual blocks: a stem, ``len(channels)`` stride-2 stages down and up, each up stage
    concatenated with the encoder's matching feature map and fused back; a 1×1×1 head to one channel.

    Args:
        input_shape: The volume shape it is built for (checked at every call).
        stem_channels: Channels of the first convolution.
        channels: Output channels of the down-sampling stages.
    """

    def __init__(self, input_shape: tuple[int, int, int], stem_channels: int, channels: tuple[int, ...]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        widths = (stem_channels, *channels)
        self.stem = conv_act_norm(nn.Conv3d(1, stem_channels, 3, padding=1), stem_channels)
        self.down = nn.ModuleList(ResidualDown(a, b) for a, b in itertools.pairwise(widths))
        reversed_widths = widths[::-1]
        self.up = nn.ModuleList(ResidualUp(a, b) for a, b in itertools.pairwise(reversed_widths))
        # After each up block the matching encoder feature map is concatenated, then fused back to b channels.
        self.fuse = nn.ModuleList(conv_act_norm(nn.Conv3d(2 * b, b, 3, padding=1), b) for b in reversed_widths[1:])
        self.head = nn.Conv3d(stem_channels, 1, 1)

    def unet(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (``(batch, 1, *input_shape)``)."""
        expected = (1, *self.input_shape)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        features = [self.stem(x)]
        for block in self.down:
            features.append(block(features[-1]))
        h = features.pop()
        for block, fuse in zip(self.up, self.fuse):
            h = fuse(torch.cat([block(h), features.pop()], dim=1))
        return self.head(h)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
