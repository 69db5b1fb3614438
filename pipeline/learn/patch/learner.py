"""``kind: torch_patch``: a spatio-temporal network trained on patches, mapped seamlessly.

The learner asks the samples stage for patches (:meth:`PatchLearner.patch_samples`), trains on
them (``train.py``), and predicts a chunk from the chunk grown by its halo: overlapping patches
on a global lattice blended with a smooth window (``blend.py``), in batches sized to the chunk's
patches within the memory budget. Check, fit, save and load are every torch kind's
(:class:`~pipeline.learn.torch.learner.NetworkLearner`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.learn.config import ModelConfig, PatchConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.learner import BlockPrediction, core_of
from pipeline.learn.patch.blend import blend_block, lattice_halo
from pipeline.learn.torch.learner import NetworkKind, NetworkLearner


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
        from pipeline.learn.patch.train import per_patch_bytes
        from pipeline.learn.torch.runtime import resolve_device

        self.network = network.eval()
        self._classes = np.asarray(classes)
        self.size, self.stride = int(size), int(stride)
        self.device = resolve_device(device)
        self.network.to(self.device)
        self.patch_bytes = per_patch_bytes(dims, params, False)

    @property
    def classes_(self) -> np.ndarray:
        return self._classes

    def patches_per_batch(self, n: int) -> int:
        """Patches per batch for a block's ``n`` patches: all of them when their activations
        fit the memory budget (half a GPU's free memory, or the CPU worker's budget), else the
        fewest equal batches that do."""
        from pipeline.learn.torch.runtime import batch_for, sized_to

        return sized_to(n, batch_for(self.device, self.patch_bytes, max(n, 1)))

    def patch_probabilities(self, patches: np.ndarray) -> np.ndarray:
        """(b, n_classes, size, size) class probabilities of (b, n_features, size, size)
        patches (NaN where missing)."""
        import torch

        from pipeline.learn.torch.runtime import autocast

        with torch.inference_mode(), autocast(self.device):
            x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32)).to(self.device)
            logits = self.network(x).float()
            return torch.softmax(logits, dim=1).cpu().numpy()

    def blend(self, block: np.ndarray, halo: int) -> np.ndarray:
        """(n_classes, h, w) blended probabilities of the core of ``block``, on the dask
        worker's threads when run in one."""
        from pipeline.learn.torch.runtime import use_worker_threads

        use_worker_threads()
        return blend_block(
            block,
            halo,
            self.size,
            self.stride,
            self.patch_probabilities,
            len(self._classes),
            batch=self.patches_per_batch,
        )

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("PatchModel is saved with pipeline.learn.save_model, not pickled")


def load_patch_model(folder: Path, contract: ModelContract, device: str = "auto") -> PatchModel:
    """The patch model saved in ``folder``, on ``device``."""
    from pipeline.learn.patch.train import patch_dims, rebuild_patch_network
    from pipeline.learn.torch.persist import incomplete_config, load_network

    config = contract.config
    try:
        dims, params = patch_dims(config), dict(config["params"])
        size, stride = int(config["patch"]["size"]), int(config["patch"]["stride"])
    except (KeyError, TypeError) as exc:
        raise incomplete_config(contract, exc) from None
    network = load_network(folder, contract, rebuild_patch_network)
    return PatchModel(
        network, np.asarray(contract.classes), size, stride, device, dims=dims, params=params
    )


class PatchLearner(NetworkLearner):
    """``kind: torch_patch``: trained on patches, predicted from the chunk grown by its halo."""

    kind = "torch_patch"

    def network_kind(self) -> NetworkKind:
        from pipeline.learn.patch.train import TASKS, check_patch_spec, fit_patch_network

        return NetworkKind(
            check=check_patch_spec, fit=fit_patch_network, load=load_patch_model, tasks=TASKS
        )

    def patch_samples(self, config: ModelConfig) -> PatchConfig:
        """What this learner trains on: patches of this size (the samples stage cuts them)."""
        return config.patch if config.patch is not None else PatchConfig()

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
