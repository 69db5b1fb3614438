"""Saving and reloading torch models, pixel and patch kinds alike: a state dict (``model.pt``)
plus the contract (``model.json``), whose config describes the network.

The state dict is read with ``weights_only=True`` (tensors only, no pickled code), and the network
is rebuilt from the architecture, hyper-parameters, dimensions and temporal layout recorded in
``model.json`` by the kind's ``rebuild``; the reloaded model gives the same predictions on the
same device.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.contract import CONTRACT_FILE, ModelContract, read_contract
from pipeline.learn.torch.estimator import SitsNetwork, TorchModel
from pipeline.learn.torch.layout import TemporalLayout
from pipeline.learn.torch.models import NetworkDims, build_network
from pipeline.learn.torch.training import WEIGHTS_FILE
from pipeline.storage import atomic_path

__all__ = [
    "WEIGHTS_FILE",
    "incomplete_config",
    "load_network",
    "load_torch_model",
    "rebuild_network",
    "save_network",
    "save_torch_model",
]

Network = TypeVar("Network", bound=nn.Module)


def save_network(network: nn.Module, contract: ModelContract, folder: Path) -> None:
    """Write the model folder atomically (weights and contract appear together)."""
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        torch.save(state, tmp / WEIGHTS_FILE)
        saved = replace(
            contract,
            model_file=WEIGHTS_FILE,
            versions={**contract.versions, "torch": torch.__version__},
        )
        (tmp / CONTRACT_FILE).write_text(saved.to_json(), encoding="utf-8")


def incomplete_config(contract: ModelContract, exc: Exception) -> ModelError:
    """The error for a contract whose config misses what rebuilds its model."""
    return ModelError(
        f"the {contract.kind} model's config in {CONTRACT_FILE} is incomplete ({exc})",
        fix="point to an intact model folder written by sitsflow",
        field="model",
    )


def load_network(
    folder: Path, contract: ModelContract, rebuild: Callable[[ModelContract], Network]
) -> Network:
    """The network ``rebuild`` makes from the contract's config, with the saved weights."""
    try:
        network = rebuild(contract)
    except (KeyError, TypeError) as exc:
        raise incomplete_config(contract, exc) from None
    path = folder / contract.model_file
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
    except FileNotFoundError:
        raise ModelError(
            f"model weights {str(path)!r} named by {CONTRACT_FILE} do not exist",
            fix="point to an intact model folder (train the model again if it was deleted)",
            field="model",
        ) from None
    except (RuntimeError, pickle.UnpicklingError, OSError) as exc:
        raise ModelError(
            f"model weights {str(path)!r} do not fit the network described in {CONTRACT_FILE} "
            f"({str(exc).splitlines()[0]})",
            fix="point to an intact model folder; weights and model.json must come from the "
            "same training",
            field="model",
        ) from None
    return network


def rebuild_network(contract: ModelContract) -> SitsNetwork:
    """The untrained pixel network described by a contract's config."""
    config = contract.config
    dims = NetworkDims(**{**config["dims"], "positions": tuple(config["dims"]["positions"])})
    layout_data = config["layout"]
    layout = (
        TemporalLayout.from_dict(layout_data, contract.feature_names)
        if layout_data is not None
        else None
    )
    core = build_network(str(config["architecture"]), dict(config["params"]), dims)
    return SitsNetwork(core, layout, len(contract.feature_names))


def save_torch_model(model: TorchModel, contract: ModelContract, folder: Path) -> None:
    save_network(model.network, contract, folder)


def load_torch_model(
    folder: Path, contract: ModelContract | None = None, device: str = "auto"
) -> tuple[TorchModel, ModelContract]:
    contract = contract or read_contract(folder)
    network = load_network(folder, contract, rebuild_network)
    model = TorchModel(
        network,
        contract.task,
        np.asarray(contract.classes, dtype=np.int64),
        float(contract.config.get("target_mean", 0.0)),
        float(contract.config.get("target_scale", 1.0)),
        device=device,
    )
    return model, contract
