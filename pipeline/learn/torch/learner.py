"""The learners of the torch kinds: ``kind: torch`` (a network on pixel time series: MLP,
TempCNN, L-TAE or a user module) and, sharing everything but the network, ``kind: torch_patch``
(``pipeline/learn/patch/learner.py``).

:class:`NetworkLearner` writes check, fit, save and load once; a kind names its
:class:`NetworkKind`: the tasks it serves, how its network is built for a check, fitted, and
rebuilt from a saved folder. Torch is imported when a kind is used, not when its learner is
looked up (planning asks a learner for its halo without loading torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.learn.config import ModelConfig
from pipeline.learn.contract import TASKS, ModelContract, Task
from pipeline.learn.learner import PixelLearner
from pipeline.learn.preflight import Builder, check_learner

__all__ = ["NetworkKind", "NetworkLearner", "TorchLearner"]


@dataclass(frozen=True)
class NetworkKind:
    """What makes a torch kind: ``check`` builds its network without training (a bad spec
    raises ModelError), ``fit`` trains it (the learner's ``fit`` signature), ``load`` rebuilds a
    saved model (folder, contract, device)."""

    check: Builder
    fit: Callable[..., tuple[Any, ModelContract]]
    load: Callable[[Path, ModelContract, str], Any]
    tasks: tuple[Task, ...] = TASKS


class NetworkLearner:
    """Check, fit, save and load of a torch kind (subclasses name the kind and its network)."""

    kind: str

    def network_kind(self) -> NetworkKind:
        raise NotImplementedError

    def check(self, config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
        network = self.network_kind()
        check_learner(config, task, feature_names, network.check, tasks=network.tasks)

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
        network = self.network_kind()
        from pipeline.learn.torch.runtime import use_worker_threads

        use_worker_threads()  # in a dask worker: its threads, not torch's default
        return network.fit(config, features, targets, feature_names, seed, task=task, groups=groups)

    def save(self, model: Any, contract: ModelContract, folder: Path) -> None:
        from pipeline.learn.torch.persist import save_network

        save_network(model.network, contract, folder)

    def load(self, folder: Path, contract: ModelContract, *, device: str = "auto") -> Any:
        return self.network_kind().load(folder, contract, device)


def _load_pixel_model(folder: Path, contract: ModelContract, device: str) -> Any:
    from pipeline.learn.torch.persist import load_torch_model

    return load_torch_model(folder, contract, device=device)[0]


class TorchLearner(NetworkLearner, PixelLearner):
    """``kind: torch``: per pixel, no halo (prediction is :class:`PixelLearner`'s)."""

    kind = "torch"

    def network_kind(self) -> NetworkKind:
        from pipeline.learn.torch.train import check_network_spec, fit_network

        return NetworkKind(check=check_network_spec, fit=fit_network, load=_load_pixel_model)
