"""Networks for pixel time series: MLP, TempCNN, L-TAE, or any ``nn.Module`` by import path.

Every network declares what it takes with the class attribute ``input_kind``: ``"flat"`` gets the
feature vector (batch, n_features); ``"temporal"`` (the default for user modules) gets
(batch, time, channels), reshaped from the feature names (see ``layout.py``). Constructors receive
the data's dimensions by keyword, only those they name among ``n_features``, ``n_times``,
``n_channels``, ``n_outputs`` and ``positions`` (days since the first date), then the user's
``params``. ``n_outputs`` is the number of classes, or 1 for regression.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pipeline.errors import ModelError

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


def sinusoid_table(positions: Sequence[float], size: int, period: float) -> torch.Tensor:
    """(len(positions), size) fixed sinusoidal encodings of the positions (in days)."""
    where = torch.tensor(positions, dtype=torch.float64).unsqueeze(1)
    rates = period ** (2 * (torch.arange(size, dtype=torch.float64) // 2) / size)
    angles = where / rates
    table = torch.where(torch.arange(size) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)


class LTAE(nn.Module):
    """Lightweight temporal attention encoder, after Garnot & Landrieu (2020), arXiv:2007.00586.

    Each date is embedded, given a sinusoidal encoding of its day, and pooled over time by
    ``n_head`` heads. Each head has one learned master query and attends over its own group of
    channels (channel grouping), which keeps the encoder small. A small MLP decodes the pooled
    vector.
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
        batch, n_times, _ = x.shape
        h = self.embed_norm(self.embed(x)) + self.encoding
        keys = self.key(h).view(batch, n_times, self.n_head, self.d_k).transpose(1, 2)
        scores = (keys @ self.query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.d_k)
        weights = self.attention_dropout(torch.softmax(scores, dim=-1))  # (batch, head, time)
        values = h.view(batch, n_times, self.n_head, -1).transpose(1, 2)  # (batch, head, time, g)
        pooled = (weights.unsqueeze(-1) * values).sum(dim=2).reshape(batch, -1)
        return self.decoder(self.mlp(pooled))


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
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]
    module_name, _, attr = architecture.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ModelError(
            f"architecture {architecture!r} is not built in and cannot be imported",
            fix=f"use one of {', '.join(ARCHITECTURES)}, or the import path package.module:Class "
            "of a torch.nn.Module on the workers' Python path",
            field="model.architecture",
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelError(
            f"{architecture!r} is not a torch.nn.Module class",
            fix="give the import path of a class derived from torch.nn.Module",
            field="model.architecture",
        )
    return cls


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
    signature = inspect.signature(cls.__init__)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    given = {
        name: value
        for name, value in asdict(dims).items()
        if accepts_any or name in signature.parameters
    }
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
    _check_output(network, architecture, input_kind(cls), dims)
    return network


def _check_output(network: nn.Module, architecture: str, kind: str, dims: NetworkDims) -> None:
    shape = (2, dims.n_features) if kind == "flat" else (2, dims.n_times, dims.n_channels)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            out = network(torch.zeros(shape))
    except Exception as exc:  # any failure of user code on a well-formed batch
        raise ModelError(
            f"{architecture} fails on a batch of shape {shape}: {type(exc).__name__}: {exc}",
            fix="check the module's forward against its input_kind ('flat': (batch, features); "
            "'temporal': (batch, time, channels))",
            field="model.architecture",
        ) from None
    finally:
        network.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, dims.n_outputs):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{architecture} returns {got} for a batch of 2, expected (2, {dims.n_outputs})",
            fix="return one row of n_outputs scores (class logits, or 1 value for regression) "
            "per sample",
            field="model.architecture",
        )
