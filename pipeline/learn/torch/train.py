"""Training a pixel network: the flat training table to a fitted :class:`TorchModel`.

The loop, its seeding, the split by polygon, early stopping and class weights are those of every
torch kind (``training.py``); here: the network for the features' layout, standardization per
channel (temporal) or per feature (flat), whole batches on the training device, and for
regression targets standardized for training and scaled back by the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.config import ModelConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.data import check_training_data
from pipeline.learn.preflight import check_task_settings
from pipeline.learn.torch.estimator import SitsNetwork, TorchModel
from pipeline.learn.torch.layout import TemporalLayout, from_feature_names
from pipeline.learn.torch.models import NetworkDims, build_network, input_kind, network_class
from pipeline.learn.torch.runtime import resolve_device
from pipeline.learn.torch.training import (
    Feed,
    class_weights,
    holdout_split,
    network_contract,
    seeded,
    train_loop,
)
from pipeline.warnings import SamplingWarning

__all__ = ["check_network_spec", "fit_network", "holdout_split", "prepare_network"]

VALIDATION_BATCH = 4096


def _normalization(
    features: np.ndarray, layout: TemporalLayout | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (temporal) or per-feature (flat) mean and standard deviation."""
    if layout is not None:
        values = features[:, layout.gather_index()].reshape(-1, layout.n_channels)
    else:
        values = features
    mean = values.mean(axis=0, dtype=np.float64)
    scale = values.std(axis=0, dtype=np.float64)
    scale[scale < 1e-12] = 1.0  # a constant feature: leave it centred, not divided by zero
    return mean.astype(np.float32), scale.astype(np.float32)


def prepare_network(
    config: ModelConfig, feature_names: Sequence[str], n_outputs: int
) -> tuple[SitsNetwork, TemporalLayout | None, NetworkDims]:
    """The untrained network for these features (raises ModelError for a bad spec)."""
    assert config.architecture is not None  # the manifest requires it for kind torch
    kind = input_kind(network_class(config.architecture))
    layout = from_feature_names(feature_names) if kind == "temporal" else None
    dims = NetworkDims(
        n_features=len(feature_names),
        n_times=layout.n_times if layout else len(feature_names),
        n_channels=layout.n_channels if layout else 1,
        n_outputs=n_outputs,
        positions=layout.positions if layout else tuple(map(float, range(len(feature_names)))),
    )
    core = build_network(config.architecture, config.params_dict(), dims)
    return SitsNetwork(core, layout, len(feature_names)), layout, dims


def check_network_spec(config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
    """Build the network for these features without training it: a bad spec fails here (the
    learner's preflight, ``pipeline.learn.preflight``, checks the task first)."""
    resolve_device(config.training.device)
    prepare_network(config, feature_names, 2 if task == "classification" else 1)


def fit_network(
    config: ModelConfig,
    features: np.ndarray,
    targets: np.ndarray,
    feature_names: Sequence[str],
    seed: int,
    *,
    task: Task = "classification",
    groups: np.ndarray | None = None,
) -> tuple[TorchModel, ModelContract]:
    """Train the network of ``config`` and wrap it for prediction."""
    targets = np.asarray(targets)
    check_training_data(features, targets, feature_names, groups, task)
    check_task_settings(config, task)
    if not np.all(np.isfinite(features)):
        bad = int((~np.isfinite(features).all(axis=1)).sum())
        raise ModelError(
            f"{bad} training sample(s) have NaN or infinite features; networks cannot use them",
            fix="drop samples with missing values (pixels never valid in the period) first",
        )
    settings = config.training
    device = resolve_device(settings.device)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if task == "classification":
        classes, codes = np.unique(targets.astype(np.int64), return_inverse=True)
        n_outputs = len(classes)
    else:
        classes, codes = np.empty(0, dtype=np.int64), np.zeros(len(targets), dtype=np.int64)
        n_outputs = 1
    held_out = holdout_split(
        codes if task == "classification" else targets,
        groups,
        settings.validation_fraction,
        seed,
        stratify=task == "classification",
    )
    if not held_out.any():
        warnings.warn(
            "no polygon could be held out to measure the validation loss (every class has a "
            f"single polygon); the network trains for all {settings.epochs} epochs without early "
            "stopping. Add reference polygons to enable it",
            SamplingWarning,
            stacklevel=2,
        )
    train_rows = ~held_out
    target_mean, target_scale = 0.0, 1.0
    if task == "regression":
        target_mean = float(targets[train_rows].mean())
        target_scale = float(targets[train_rows].std()) or 1.0

    with seeded(seed, device):
        network, layout, dims = prepare_network(config, feature_names, n_outputs)
        if config.standardize is not False:
            network.set_normalization(*_normalization(features[train_rows], layout))
        network.to(device)
        if task == "classification":
            weights = (
                class_weights(codes[train_rows], n_outputs).to(device)
                if settings.class_weights == "balanced"
                else None
            )
            loss: nn.Module = nn.CrossEntropyLoss(weight=weights)
            y_all = torch.from_numpy(codes.astype(np.int64))
        else:
            loss = nn.MSELoss()
            scaled = (targets.astype(np.float64) - target_mean) / target_scale
            y_all = torch.from_numpy(scaled.astype(np.float32)).unsqueeze(1)
        x_all = torch.from_numpy(features)
        x_train, y_train = x_all[train_rows].to(device), y_all[train_rows].to(device)
        x_val, y_val = x_all[held_out].to(device), y_all[held_out].to(device)
        feed = Feed(device, settings.batch_size, VALIDATION_BATCH)
        record = train_loop(network, loss, settings, (x_train, y_train), (x_val, y_val), seed, feed)

    network.to("cpu")
    model = TorchModel(network, task, classes, target_mean, target_scale, device="cpu")
    record.update(
        {
            "device": str(device),
            "training_samples": int(train_rows.sum()),
            "validation_samples": int(held_out.sum()),
            "validation_groups": len(np.unique(groups[held_out]))
            if groups is not None
            else int(held_out.sum()),
        }
    )
    details = {
        "input_kind": "temporal" if layout is not None else "flat",
        "dims": asdict(dims),
        "layout": layout.to_dict() if layout is not None else None,
        "standardize": config.standardize is not False,
        "target_mean": target_mean,
        "target_scale": target_scale,
    }
    contract = network_contract(
        config,
        kind="torch",
        task=task,
        feature_names=feature_names,
        classes=classes,
        details=details,
        seed=seed,
        record=record,
    )
    return model, contract
