"""Networks for pixel time series: MLP, TempCNN, L-TAE, or any ``nn.Module`` by import path.

Every network declares what it takes with the class attribute ``input_kind``: ``"flat"`` gets the
feature vector (batch, n_features); ``"temporal"`` (the default for user modules) gets
(batch, time, channels), reshaped from the feature names (see ``layout.py``). Constructors receive
the data's dimensions by keyword, only those they name among ``n_features``, ``n_times``,
``n_channels``, ``n_outputs`` and ``positions`` (days since the first date), then the user's
``params``. ``n_outputs`` is the number of classes, or 1 for regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.torch.blocks import TemporalAttention
from pipeline.learn.torch.build import DummyBatch, construct, module_class

INPUT_KINDS = ("flat", "temporal")


class MLP(nn.Module):
    """Fully connected layers on the flat feature vector (a strong baseline for short series)."""

    input_kind: ClassVar[str] = "flat"

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size = n_features
        for width in hidden:
            layers += [
                nn.Linear(size, width),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            size = width
        layers.append(nn.Linear(size, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TempCNN(nn.Module):
    """Temporal convolutions, after Pelletier, Webb & Petitjean (2019), Remote Sensing 11(5):523.

    Stacked 1-D convolutions over time (batch norm, ReLU, dropout), then one dense layer. The
    convolutions keep the length of the series, so the dense layer sees every date.
    """

    input_kind: ClassVar[str] = "temporal"

    def __init__(
        self,
        n_channels: int,
        n_times: int,
        n_outputs: int,
        filters: int = 64,
        kernel_size: int = 5,
        conv_layers: int = 3,
        dense: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd to keep the series length, got {kernel_size}"
            )
        blocks: list[nn.Module] = []
        size = n_channels
        for _ in range(conv_layers):
            blocks += [
                nn.Conv1d(size, filters, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm1d(filters),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            size = filters
        self.convolutions = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(size * n_times, dense),
            nn.BatchNorm1d(dense),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense, n_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convolutions(x.transpose(1, 2)))


class LTAE(TemporalAttention):
    """Lightweight temporal attention encoder, after Garnot & Landrieu (2020), arXiv:2007.00586.

    The series is pooled by the L-TAE (:class:`~pipeline.learn.torch.blocks.TemporalAttention`:
    ``n_head`` master queries over a sinusoidal encoding of each date's day, channel grouping),
    with dropout on the attention; a small MLP and a decoder turn the pooled vector into scores.
    """

    input_kind: ClassVar[str] = "temporal"

    def __init__(
        self,
        n_channels: int,
        n_outputs: int,
        positions: Sequence[float],
        d_model: int = 128,
        n_head: int = 16,
        d_k: int = 8,
        mlp: Sequence[int] = (128,),
        decoder: Sequence[int] = (64, 32),
        dropout: float = 0.2,
        period: float = 1000.0,
    ) -> None:
        super().__init__(n_channels, positions, d_model, n_head, d_k, period)
        self.attention_dropout = nn.Dropout(dropout)
        layers: list[nn.Module] = []
        size = d_model
        for width in mlp:
            layers += [nn.Linear(size, width), nn.BatchNorm1d(width), nn.ReLU()]
            size = width
        self.mlp = nn.Sequential(*layers, nn.Dropout(dropout), nn.LayerNorm(size))
        decode: list[nn.Module] = []
        for width in decoder:
            decode += [nn.Linear(size, width), nn.BatchNorm1d(width), nn.ReLU()]
            size = width
        self.decoder = nn.Sequential(*decode, nn.Linear(size, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(self.mlp(self.pool(x, self.attention_dropout)))
        return out


ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLP, "tempcnn": TempCNN, "ltae": LTAE}


@dataclass(frozen=True)
class NetworkDims:
    """The data's dimensions, given to network constructors that name them."""

    n_features: int
    n_times: int
    n_channels: int
    n_outputs: int
    positions: tuple[float, ...]


def network_class(architecture: str) -> type[nn.Module]:
    return module_class(architecture, ARCHITECTURES, "architecture")


def input_kind(cls: type[nn.Module]) -> str:
    kind = getattr(cls, "input_kind", "temporal")
    if kind not in INPUT_KINDS:
        raise ModelError(
            f"{cls.__name__}.input_kind is {kind!r}",
            fix="set the class attribute input_kind to 'flat' or 'temporal'",
            field="model.architecture",
        )
    return str(kind)


def build_network(architecture: str, params: dict[str, Any], dims: NetworkDims) -> nn.Module:
    """The network, constructed with the dimensions it names and ``params``; its output shape
    is checked on a dummy batch so that a bad module fails here, not after training."""
    cls = network_class(architecture)
    flat = input_kind(cls) == "flat"
    dummy = DummyBatch(
        shape=(2, dims.n_features) if flat else (2, dims.n_times, dims.n_channels),
        expected=(2, dims.n_outputs),
        name=architecture,
        takes=" (batch, features)" if flat else " (batch, time, channels)",
        returns=" (batch, n_outputs)",
        fix_input="check the module's forward against its input_kind ('flat': (batch, "
        "features); 'temporal': (batch, time, channels))",
        fix_output="return one row of n_outputs scores (class logits, or 1 value for "
        "regression) per sample",
    )
    return construct(cls, architecture, params, dims, dummy)
