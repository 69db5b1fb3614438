"""User patch networks by import path (tests/patch/nets.py:Name)."""

from __future__ import annotations

import torch
from torch import nn


class PixelMean(nn.Module):
    """Right shape: a 1x1 convolution of the time-averaged channels."""

    def __init__(self, n_channels: int, n_outputs: int, scale: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_channels, n_outputs, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x.mean(dim=1)) * self.scale
        return out


class PooledToVector(nn.Module):
    """Wrong shape: one score vector per patch, not per pixel."""

    def __init__(self, n_channels: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_channels, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x.mean(dim=(1, 3, 4)))
        return out
