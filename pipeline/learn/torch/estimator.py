"""A fitted torch network behind the interface prediction uses for every model.

``TorchModel`` takes flat (n_samples, n_features) float arrays like a scikit-learn estimator and
exposes ``predict``, ``predict_proba`` (classification) and ``classes_``; it predicts in
inference mode, in batches sized to the rows given (a chunk) within the memory budget, on the
dask worker's threads (``runtime.py``). The network it wraps (``SitsNetwork``) holds the
normalization and the reshaping to (batch, time, channels), so the saved state dict is the whole
model.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.torch.blocks import Standardized
from pipeline.learn.torch.layout import TemporalLayout
from pipeline.learn.torch.runtime import (
    activation_bytes,
    batch_for,
    resolve_device,
    sized_to,
    use_worker_threads,
)

__all__ = ["SitsNetwork", "TorchModel", "resolve_device"]

Task = Literal["classification", "regression"]


class SitsNetwork(Standardized):
    """Normalization, then (for temporal networks) reshaping, then the core network."""

    def __init__(self, core: nn.Module, layout: TemporalLayout | None, n_features: int) -> None:
        n_stats = layout.n_channels if layout is not None else n_features
        gather = layout.gather_index() if layout is not None else np.arange(n_features)
        super().__init__(core, n_stats, gather)
        # The input's width: not the gathered width, where a static channel (an encoder's
        # output) is read once per date.
        self.n_features = n_features
        self.temporal = layout is not None
        self.shape = (layout.n_times, layout.n_channels) if layout is not None else (n_features,)

    def arrange(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_features) to what the core takes: (batch, T, C) or (batch, F)."""
        if self.temporal:
            return x[:, self.gather].reshape(x.shape[0], *self.shape)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.core((self.arrange(x) - self.mean) / self.scale)
        return out


class TorchModel:
    """A trained network with the scikit-learn prediction interface."""

    def __init__(
        self,
        network: SitsNetwork,
        task: Task,
        classes: np.ndarray,
        target_mean: float = 0.0,
        target_scale: float = 1.0,
        device: str = "cpu",
        batch_size: int | None = None,
    ) -> None:
        self.network = network.eval()
        self.task = task
        self._classes = np.asarray(classes)
        self.target_mean = float(target_mean)
        self.target_scale = float(target_scale)
        self.device = resolve_device(device)
        self.network.to(self.device)
        self.batch_size = batch_size  # rows per batch at most (None: the memory budget's)
        self._row_bytes: int | None = None

    @property
    def classes_(self) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("a regression model has no classes_")
        return self._classes

    @property
    def n_features_in_(self) -> int:
        return int(self.network.n_features)

    @property
    def row_bytes(self) -> int:
        """Activation bytes of one row (its layers' outputs, measured once on a dummy batch)."""
        if self._row_bytes is None:
            example = torch.zeros((2, self.n_features_in_), device=self.device)
            self._row_bytes = activation_bytes(self.network, example)
        return self._row_bytes

    def rows_per_batch(self, n: int) -> int:
        """Rows per batch for ``n`` rows (a chunk's valid pixels): all of them in one batch when
        their activations fit the memory budget, else the fewest equal batches that do."""
        return sized_to(n, batch_for(self.device, self.row_bytes, self.batch_size or max(n, 1)))

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Raw network outputs (logits, or standardized values) for (n, n_features) features,
        on the dask worker's threads when run in one."""
        table = np.ascontiguousarray(features, dtype=np.float32)
        if table.ndim != 2 or table.shape[1] != self.n_features_in_:
            raise ModelError(
                f"the model takes (samples, {self.n_features_in_}) features, got {table.shape}",
                fix="give the features the model was trained on, in the same order",
            )
        if table.shape[0] == 0:
            width = len(self._classes) if self.task == "classification" else 1
            return np.empty((0, width), dtype=np.float32)
        use_worker_threads()
        rows = self.rows_per_batch(table.shape[0])
        parts: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, table.shape[0], rows):
                batch = torch.from_numpy(table[start : start + rows]).to(self.device)
                parts.append(self.network(batch).float().cpu().numpy())
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        if self.task != "classification":
            raise ModelError(
                "predict_proba is for classification; this is a regression model",
                fix="use predict",
            )
        logits = torch.from_numpy(self.outputs(features))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        out = self.outputs(features)
        if self.task == "classification":
            return self._classes[out.argmax(axis=1)]
        return out[:, 0] * self.target_scale + self.target_mean

    def __getstate__(self) -> dict[str, Any]:
        # Moving a model between processes goes through its folder (persist.py), never a pickle.
        raise TypeError("TorchModel is saved with pipeline.learn.save_model, not pickled")
