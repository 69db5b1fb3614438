"""``kind: torch``: a network on pixel time series (MLP, TempCNN, L-TAE or a user module)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.learn.config import ModelConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.learner import PixelLearner
from pipeline.learn.torch.persist import load_torch_model, save_torch_model
from pipeline.learn.torch.train import check_network_spec, fit_network


def _use_worker_threads() -> None:
    """Inside a dask worker, let torch use the worker's threads, not every core of the machine
    (several worker processes share the cores)."""
    try:
        from distributed import get_worker

        threads = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return
    import torch

    torch.set_num_threads(max(1, threads))


class TorchLearner(PixelLearner):
    kind = "torch"

    def check(self, config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
        check_network_spec(config, task, feature_names)

    def fit(
        self,
        config: ModelConfig,
        features: np.ndarray,
        targets: np.ndarray,
        feature_names: Sequence[str],
        seed: int,
        *,
        task: Task,
        groups: np.ndarray | None,
    ) -> tuple[Any, ModelContract]:
        return fit_network(config, features, targets, feature_names, seed, task=task, groups=groups)

    def save(self, model: Any, contract: ModelContract, folder: Path) -> None:
        save_torch_model(model, contract, folder)

    def load(self, folder: Path, contract: ModelContract, *, device: str = "auto") -> Any:
        model, _contract = load_torch_model(folder, contract, device=device)
        _use_worker_threads()
        return model
