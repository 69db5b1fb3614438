"""Networks on patches of a satellite image time series: (batch, time, channels, h, w) in,
(batch, n_outputs, h, w) class scores out.

* ``utae``: temporal then spatial, in the spirit of U-TAE (Garnot & Landrieu, 2021,
  arXiv:2107.07933). Each pixel's series is pooled by a lightweight temporal attention encoder
  (L-TAE: per-head master queries over a sinusoidal encoding of the day), giving a feature map
  that a small 2D encoder-decoder (one down/up level with a skip connection) turns into class
  scores per pixel. U-TAE attends at every level of the U-Net; here the attention pools once,
  at full resolution, which keeps it small enough to train on a CPU.
* ``unet``: the convolutional baseline: every (date, channel) as an input channel of the same
  2D encoder-decoder (early fusion, no temporal model).
* any ``torch.nn.Module`` by import path (``package.module:Class``): its constructor gets the
  dimensions it names among ``n_channels``, ``n_times``, ``n_outputs``, ``positions`` and
  ``patch_size``, then ``model.params``; it is tried on a dummy batch before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.learn.torch.blocks import TemporalAttention
from pipeline.learn.torch.build import DummyBatch, construct, module_class

__all__ = ["PATCH_ARCHITECTURES", "UTAE", "PatchDims", "PatchUNet", "build_patch_network"]


@dataclass(frozen=True)
class PatchDims:
    """The data's dimensions, given to network constructors that name them."""

    n_channels: int
    n_times: int
    n_outputs: int
    positions: tuple[float, ...]
    patch_size: int


def _conv(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class _UNet(nn.Module):
    """Two 3x3 convolutions, one 2x down/up level (a strided and a transposed convolution: both
    deterministic on a GPU, unlike max pooling's backward) with a skip connection, a 1x1 head.
    Zero padding in every convolution: a patch's border pixels see less context, which the
    blending window weighs down."""

    def __init__(self, inputs: int, n_outputs: int, width: int, dropout: float) -> None:
        super().__init__()
        self.encode = nn.Sequential(_conv(inputs, width), _conv(width, width))
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 2, stride=2), _conv(2 * width, 2 * width)
        )
        self.up = nn.ConvTranspose2d(2 * width, 2 * width, 2, stride=2)
        self.decode = nn.Sequential(_conv(3 * width, width), nn.Dropout2d(dropout))
        self.head = nn.Conv2d(width, n_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.encode(x)
        deep = self.up(self.down(skip))
        out: torch.Tensor = self.head(self.decode(torch.cat([skip, deep], dim=1)))
        return out


class UTAE(TemporalAttention):
    """Per-pixel temporal attention (the L-TAE of the pixel ``ltae``), then a small 2D
    encoder-decoder."""

    def __init__(
        self,
        n_channels: int,
        n_outputs: int,
        positions: Sequence[float],
        d_model: int = 32,
        n_head: int = 4,
        d_k: int = 4,
        width: int = 32,
        dropout: float = 0.1,
        period: float = 1000.0,
    ) -> None:
        super().__init__(n_channels, positions, d_model, n_head, d_k, period)
        self.spatial = _UNet(d_model, n_outputs, width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_times, n_channels, height, width = x.shape
        series = x.permute(0, 3, 4, 1, 2).reshape(-1, n_times, n_channels)  # one per pixel
        pooled = self.pool(series).reshape(batch, height, width, -1)
        out: torch.Tensor = self.spatial(pooled.permute(0, 3, 1, 2))
        return out


class PatchUNet(nn.Module):
    """The convolutional baseline: dates x channels stacked as image channels, then the same
    encoder-decoder."""

    def __init__(
        self, n_channels: int, n_times: int, n_outputs: int, width: int = 32, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.net = _UNet(n_channels * n_times, n_outputs, width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_times, n_channels, height, width = x.shape
        out: torch.Tensor = self.net(x.reshape(batch, n_times * n_channels, height, width))
        return out


PATCH_ARCHITECTURES: dict[str, type[nn.Module]] = {"utae": UTAE, "unet": PatchUNet}


def patch_network_class(architecture: str) -> type[nn.Module]:
    return module_class(architecture, PATCH_ARCHITECTURES, "patch architecture")


def build_patch_network(architecture: str, params: dict[str, Any], dims: PatchDims) -> nn.Module:
    """The network, built with the dimensions it names and ``params``, and tried on a dummy
    batch: a module that returns the wrong shape fails here, named, before any training."""
    size = dims.patch_size
    dummy = DummyBatch(
        shape=(2, dims.n_times, dims.n_channels, size, size),
        expected=(2, dims.n_outputs, size, size),
        name=f"patch network {architecture}",
        takes=" (batch, time, channels, height, width)",
        returns=" (batch, classes, height, width)",
        fix_input="make the module's forward take (batch, time, channels, height, width)",
        fix_output="return one score per class (n_outputs) for every pixel of the patch, at "
        "the patch's size",
    )
    return construct(patch_network_class(architecture), architecture, params, dims, dummy)
