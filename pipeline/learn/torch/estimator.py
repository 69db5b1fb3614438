"""A fitted torch network behind the interface prediction uses for every model.

``TorchModel`` takes flat (n_samples, n_features) float arrays like a scikit-learn estimator and
exposes ``predict``, ``predict_proba`` (classification) and ``classes_``. The network it wraps
(``SitsNetwork``) holds the normalization and the reshaping to (batch, time, channels), so the
saved state dict is the whole model.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.torch.layout import TemporalLayout

Task = Literal["classification", "regression"]


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when a GPU is present, else the CPU; 'cuda' without a GPU is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "training.device is 'cuda' but torch sees no CUDA GPU on this machine",
            fix="set model.training.device to auto or cpu, or run on a GPU node",
            field="model.training.device",
        )
    return torch.device(device)


class SitsNetwork(nn.Module):
    """Normalization, then (for temporal networks) reshaping, then the core network."""

    mean: torch.Tensor
    scale: torch.Tensor
    gather: torch.Tensor

    def __init__(self, core: nn.Module, layout: TemporalLayout | None, n_features: int) -> None:
        super().__init__()
        self.core = core
        self.temporal = layout is not None
        n_stats = layout.n_channels if layout is not None else n_features
        self.register_buffer("mean", torch.zeros(n_stats))
        self.register_buffer("scale", torch.ones(n_stats))
        gather = layout.gather_index() if layout is not None else np.arange(n_features)
        self.register_buffer("gather", torch.from_numpy(gather), persistent=False)
        self.shape = (layout.n_times, layout.n_channels) if layout is not None else (n_features,)

    def arrange(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_features) to what the core takes: (batch, T, C) or (batch, F)."""
        if self.temporal:
            return x[:, self.gather].reshape(x.shape[0], *self.shape)
        return x

    def set_normalization(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))

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
        batch_size: int = 16384,
    ) -> None:
        self.network = network.eval()
        self.task = task
        self._classes = np.asarray(classes)
        self.target_mean = float(target_mean)
        self.target_scale = float(target_scale)
        self.device = resolve_device(device)
        self.network.to(self.device)
        self.batch_size = batch_size

    @property
    def classes_(self) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("a regression model has no classes_")
        return self._classes

    @property
    def n_features_in_(self) -> int:
        return int(self.network.gather.numel())

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Raw network outputs (logits, or standardized values) for (n, n_features) features."""
        table = np.ascontiguousarray(features, dtype=np.float32)
        if table.ndim != 2 or table.shape[1] != self.n_features_in_:
            raise ModelError(
                f"the model takes (samples, {self.n_features_in_}) features, got {table.shape}",
                fix="give the features the model was trained on, in the same order",
            )
        parts: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, table.shape[0], self.batch_size):
                batch = torch.from_numpy(table[start : start + self.batch_size]).to(self.device)
                parts.append(self.network(batch).float().cpu().numpy())
        if not parts:
            width = len(self._classes) if self.task == "classification" else 1
            return np.empty((0, width), dtype=np.float32)
        return np.concatenate(parts, axis=0)

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
