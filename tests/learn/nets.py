"""User networks imported by path in the tests, as a user's own package would be."""

from __future__ import annotations

import torch
from torch import nn


class TinyGRU(nn.Module):
    """A GRU over the dates: a temporal user module (the default input kind)."""

    def __init__(self, n_channels: int, n_outputs: int, hidden: int = 16) -> None:
        super().__init__()
        self.gru = nn.GRU(n_channels, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x)
        result: torch.Tensor = self.out(last[-1])
        return result


class FlatLinear(nn.Module):
    """A linear model on the flat feature vector."""

    input_kind = "flat"

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.linear(x)
        return result


class WrongWidth(nn.Module):
    """Returns one column too many: must be refused before training."""

    def __init__(self, n_channels: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_channels, n_outputs + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.linear(x.mean(dim=1))
        return result


class NotAModule:
    """Not an nn.Module."""
