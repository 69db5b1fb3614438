"""Building blocks shared by the pixel networks and the patch networks.

* :class:`Standardized`: the wrapper every saved network is: the features' standardization
  (mean and scale, saved with the weights) and the index that orders them by (time, channel),
  in front of the core network.
* :class:`TemporalAttention`: the lightweight temporal attention encoder (L-TAE) that pools a
  series of dates into one vector, used by the pixel ``ltae`` and by the patch ``utae`` per pixel.

Both are base classes rather than submodules, so that the networks built on them keep the
parameter names (``mean``, ``core.embed.weight``...) their saved weights have always had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Standardized", "TemporalAttention", "sinusoid_table"]


class Standardized(nn.Module):
    """A core network behind the standardization of its inputs."""

    mean: torch.Tensor
    scale: torch.Tensor
    gather: torch.Tensor

    def __init__(self, core: nn.Module, n_stats: int, gather: np.ndarray) -> None:
        super().__init__()
        self.core = core
        self.register_buffer("mean", torch.zeros(n_stats))
        self.register_buffer("scale", torch.ones(n_stats))
        # Rebuilt from the layout in model.json, not saved.
        self.register_buffer("gather", torch.from_numpy(gather), persistent=False)

    def set_normalization(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))


def sinusoid_table(positions: Sequence[float], size: int, period: float) -> torch.Tensor:
    """(len(positions), size) fixed sinusoidal encodings of the positions (in days)."""
    where = torch.tensor(positions, dtype=torch.float64).unsqueeze(1)
    rates = period ** (2 * (torch.arange(size, dtype=torch.float64) // 2) / size)
    angles = where / rates
    table = torch.where(torch.arange(size) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)


class TemporalAttention(nn.Module):
    """Lightweight temporal attention encoder, after Garnot & Landrieu (2020), arXiv:2007.00586.

    Each date is embedded, given a sinusoidal encoding of its day, and pooled over time by
    ``n_head`` heads. Each head has one learned master query and attends over its own group of
    channels (channel grouping), which keeps the encoder small.
    """

    def __init__(
        self,
        n_channels: int,
        positions: Sequence[float],
        d_model: int,
        n_head: int,
        d_k: int,
        period: float,
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

    def pool(self, series: torch.Tensor, dropout: nn.Module | None = None) -> torch.Tensor:
        """(n, time, channels) series to (n, d_model) vectors; ``dropout`` on the attention."""
        n, n_times, _ = series.shape
        h = self.embed_norm(self.embed(series)) + self.encoding
        keys = self.key(h).view(n, n_times, self.n_head, self.d_k).transpose(1, 2)
        scores = (keys @ self.query.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.d_k)
        weights = torch.softmax(scores, dim=-1)  # (n, head, time)
        if dropout is not None:
            weights = dropout(weights)
        values = h.view(n, n_times, self.n_head, -1).transpose(1, 2)  # (n, head, time, group)
        return (weights.unsqueeze(-1) * values).sum(dim=2).reshape(n, -1)
