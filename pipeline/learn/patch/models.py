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

import importlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.torch.models import sinusoid_table

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


class UTAE(nn.Module):
    """Per-pixel temporal attention (L-TAE), then a small 2D encoder-decoder."""

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
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_head ({n_head})")
        self.n_head, self.d_k = n_head, d_k
        self.embed = nn.Linear(n_channels, d_model)
        self.embed_norm = nn.LayerNorm(d_model)
        encoding = sinusoid_table(positions, d_model // n_head, period).repeat(1, n_head)
        self.register_buffer("encoding", encoding, persistent=False)
        self.query = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.key = nn.Linear(d_model, n_head * d_k)
        self.spatial = _UNet(d_model, n_outputs, width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_times, n_channels, height, width = x.shape
        series = x.permute(0, 3, 4, 1, 2).reshape(-1, n_times, n_channels)  # one per pixel
        h = self.embed_norm(self.embed(series)) + self.encoding
        keys = self.key(h).view(-1, n_times, self.n_head, self.d_k).transpose(1, 2)
        scores = (keys @ self.query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.d_k)
        weights = torch.softmax(scores, dim=-1)  # (pixels, head, time)
        values = h.view(-1, n_times, self.n_head, h.shape[-1] // self.n_head).transpose(1, 2)
        pooled = (weights.unsqueeze(-1) * values).sum(dim=2).reshape(batch, height, width, -1)
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
    if architecture in PATCH_ARCHITECTURES:
        return PATCH_ARCHITECTURES[architecture]
    module_name, _, attr = architecture.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ModelError(
            f"patch architecture {architecture!r} is not built in and cannot be imported",
            fix=f"use one of {', '.join(PATCH_ARCHITECTURES)}, or the import path "
            "package.module:Class of a torch.nn.Module on the workers' Python path",
            field="model.architecture",
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelError(
            f"{architecture!r} is not a torch.nn.Module class",
            fix="give the import path of a class derived from torch.nn.Module",
            field="model.architecture",
        )
    return cls


def build_patch_network(architecture: str, params: dict[str, Any], dims: PatchDims) -> nn.Module:
    """The network, built with the dimensions it names and ``params``, and tried on a dummy
    batch: a module that returns the wrong shape fails here, named, before any training."""
    cls = patch_network_class(architecture)
    signature = inspect.signature(cls.__init__)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    given = {k: v for k, v in asdict(dims).items() if accepts_any or k in signature.parameters}
    clash = sorted(set(given) & set(params))
    if clash:
        raise ModelError(
            f"model.params sets {clash}, which sitsflow derives from the data",
            fix=f"remove {', '.join(clash)} from model.params",
            field="model.params",
        )
    try:
        network = cls(**given, **params)
    except (TypeError, ValueError) as exc:
        accepted = [n for n in signature.parameters if n != "self" and n not in asdict(dims)]
        raise ModelError(
            f"{architecture} cannot be built with params {params}: {exc}",
            fix=f"use hyper-parameters it accepts ({', '.join(accepted) or 'none'}) with valid "
            "values in model.params",
            field="model.params",
        ) from None
    _check_output(network, architecture, dims)
    return network


def _check_output(network: nn.Module, architecture: str, dims: PatchDims) -> None:
    size = dims.patch_size
    shape = (2, dims.n_times, dims.n_channels, size, size)
    expected = (2, dims.n_outputs, size, size)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            out = network(torch.zeros(shape))
    except Exception as exc:  # any failure of user code on a well-formed batch
        raise ModelError(
            f"patch network {architecture} fails on a batch of shape {shape} (batch, time, "
            f"channels, height, width): {type(exc).__name__}: {exc}",
            fix="make the module's forward take (batch, time, channels, height, width)",
            field="model.architecture",
        ) from None
    finally:
        network.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"patch network {architecture} returns {got} for a batch of shape {shape}, "
            f"expected {expected} (batch, classes, height, width)",
            fix="return one score per class (n_outputs) for every pixel of the patch, at the "
            "patch's size",
            field="model.architecture",
        )
