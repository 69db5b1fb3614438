"""``kind: torch_patch``: a spatio-temporal network trained on patches, mapped seamlessly.

The learner asks the samples stage for patches (:meth:`PatchLearner.patch_samples`), trains on
them (``train.py``), and predicts a chunk from the chunk grown by its halo: overlapping patches
on a global lattice blended with a smooth window (``blend.py``).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ModelError
from pipeline.learn.config import ModelConfig, PatchConfig
from pipeline.learn.contract import CONTRACT_FILE, ModelContract, Task
from pipeline.learn.learner import BlockPrediction, core_of
from pipeline.learn.patch.blend import blend_block, lattice_halo

WEIGHTS_FILE = "model.pt"


class PatchModel:
    """A trained patch network and how the map is tiled with it."""

    def __init__(
        self,
        network: Any,
        classes: np.ndarray,
        size: int,
        stride: int,
        device: str = "cpu",
        *,
        dims: Any,
        params: dict[str, Any],
    ) -> None:
        from pipeline.learn.patch.train import batch_for, per_patch_bytes
        from pipeline.learn.torch.estimator import resolve_device

        self.network = network.eval()
        self._classes = np.asarray(classes)
        self.size, self.stride = int(size), int(stride)
        self.device = resolve_device(device)
        self.network.to(self.device)
        # Patches per batch: from the GPU's free memory, or the CPU worker's memory budget.
        self.batch = batch_for(self.device, per_patch_bytes(dims, params, False), 256)

    @property
    def classes_(self) -> np.ndarray:
        return self._classes

    def patch_probabilities(self, patches: np.ndarray) -> np.ndarray:
        """(b, n_classes, size, size) class probabilities of (b, n_features, size, size)
        patches (NaN where missing)."""
        import torch

        from pipeline.learn.patch.train import autocast

        with torch.inference_mode(), autocast(self.device):
            x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32)).to(self.device)
            logits = self.network(x).float()
            return torch.softmax(logits, dim=1).cpu().numpy()

    def blend(self, block: np.ndarray, halo: int) -> np.ndarray:
        """(n_classes, h, w) blended probabilities of the core of ``block``."""
        return blend_block(
            block,
            halo,
            self.size,
            self.stride,
            self.patch_probabilities,
            len(self._classes),
            batch=self.batch,
        )

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("PatchModel is saved with pipeline.learn.save_model, not pickled")


def _use_worker_threads() -> None:
    from pipeline.learn.torch.learner import _use_worker_threads as use

    use()


class PatchLearner:
    kind = "torch_patch"

    def patch_samples(self, config: ModelConfig) -> PatchConfig:
        """What this learner trains on: patches of this size (the samples stage cuts them)."""
        return config.patch if config.patch is not None else PatchConfig()

    def check(self, config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
        from pipeline.learn.patch.train import check_patch_spec

        check_patch_spec(config, task, feature_names)

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
        from pipeline.learn.patch.train import fit_patch_network

        _use_worker_threads()  # on a CPU worker: its threads, not every core of the machine
        return fit_patch_network(
            config, features, targets, feature_names, seed, task=task, groups=groups
        )

    def save(self, model: Any, contract: ModelContract, folder: Path) -> None:
        import torch

        from pipeline.storage import atomic_path

        state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            torch.save(state, tmp / WEIGHTS_FILE)
            saved = replace(
                contract,
                model_file=WEIGHTS_FILE,
                versions={**contract.versions, "torch": torch.__version__},
            )
            (tmp / CONTRACT_FILE).write_text(saved.to_json(), encoding="utf-8")

    def load(self, folder: Path, contract: ModelContract, *, device: str = "auto") -> Any:
        import torch

        from pipeline.learn.patch.models import PatchDims, build_patch_network
        from pipeline.learn.patch.train import PatchNetwork
        from pipeline.learn.torch.layout import TemporalLayout

        config = contract.config
        try:
            dims = PatchDims(**{**config["dims"], "positions": tuple(config["dims"]["positions"])})
            layout = TemporalLayout.from_dict(config["layout"], contract.feature_names)
            size, stride = int(config["patch"]["size"]), int(config["patch"]["stride"])
            core = build_patch_network(str(config["architecture"]), dict(config["params"]), dims)
        except (KeyError, TypeError) as exc:
            raise ModelError(
                f"the patch model's config in {CONTRACT_FILE} is incomplete ({exc})",
                fix="point to an intact model folder written by sitsflow",
                field="model",
            ) from None
        network = PatchNetwork(core, layout)
        path = folder / contract.model_file
        try:
            network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise ModelError(
                f"model weights {str(path)!r} named by {CONTRACT_FILE} do not exist",
                fix="point to an intact model folder (train the model again if it was deleted)",
                field="model",
            ) from None
        except (RuntimeError, pickle.UnpicklingError, OSError) as exc:
            raise ModelError(
                f"model weights {str(path)!r} do not fit the network described in "
                f"{CONTRACT_FILE} ({str(exc).splitlines()[0]})",
                fix="point to an intact model folder; weights and model.json must come from "
                "the same training",
                field="model",
            ) from None
        _use_worker_threads()
        return PatchModel(
            network,
            np.asarray(contract.classes),
            size,
            stride,
            device=device,
            dims=dims,
            params=dict(config["params"]),
        )

    def halo(self, contract: ModelContract) -> int:
        patch = contract.config["patch"]
        return lattice_halo(int(patch["size"]), int(patch["stride"]))

    def predict_block(
        self, model: Any, block: np.ndarray, halo: int, task: Task
    ) -> BlockPrediction:
        valid = np.isfinite(core_of(block, halo)).all(axis=0)
        if not valid.any():
            return BlockPrediction(valid)
        probabilities = model.blend(block, halo)
        return BlockPrediction(valid, model.classes_, probabilities[:, valid].T)
