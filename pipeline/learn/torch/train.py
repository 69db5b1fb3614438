"""The training loop: seeded, early-stopped on a validation set held out by polygon.

* Reproducible: the network's initialization, the batch order and dropout draw from generators
  seeded with the run's seed, under ``torch.use_deterministic_algorithms``; the caller's global
  RNG state and determinism setting are restored afterwards. Same seed, same data, same device:
  the same weights.
* Validation: a share of the training polygons (stratified by class) is held out; pixels of one
  polygon never sit on both sides, else early stopping would measure memorized fields.
* Early stopping on the validation loss with ``patience``; the best epoch's weights are kept.
* Class weights (optional): the inverse of each class's frequency, as scikit-learn's "balanced".
* Regression: targets are standardized for training and scaled back by the model.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.config import ModelConfig, TrainingConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.data import check_training_data
from pipeline.learn.torch.estimator import SitsNetwork, TorchModel, resolve_device
from pipeline.learn.torch.layout import TemporalLayout, from_feature_names
from pipeline.learn.torch.models import NetworkDims, build_network, input_kind, network_class
from pipeline.warnings import SamplingWarning


def holdout_split(
    targets: np.ndarray,
    groups: np.ndarray | None,
    fraction: float,
    seed: int,
    *,
    stratify: bool,
) -> np.ndarray:
    """Boolean mask of the samples held out for validation, whole groups at a time.

    Per class (the majority class of each group) ``round(n * fraction)`` of its n groups are held
    out, at least one and at most n - 1: every class keeps training groups, and every class with
    two or more groups is validated.
    """
    if groups is None:
        groups = np.arange(len(targets))
    unique, inverse = np.unique(groups, return_inverse=True)
    if stratify:
        strata = np.empty(len(unique), dtype=targets.dtype)
        for g in range(len(unique)):
            values, counts = np.unique(targets[inverse == g], return_counts=True)
            strata[g] = values[counts.argmax()]
    else:
        strata = np.zeros(len(unique), dtype=np.int64)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(unique), dtype=bool)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        n = len(members)
        if n < 2:
            continue
        n_held = min(max(round(n * fraction), 1), n - 1)
        held[rng.permutation(members)[:n_held]] = True
    return held[inverse]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and use deterministic algorithms, restoring the caller's settings after."""
    previous = torch.are_deterministic_algorithms_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace (documented by PyTorch).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


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


def _class_weights(codes: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    return torch.as_tensor(len(codes) / (n_classes * counts), dtype=torch.float32)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()  # batch norm cannot train on one sample; it is drawn again next epoch
    return batches


def _mean_loss(
    network: nn.Module, loss: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> float:
    network.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            total += float(loss(network(xb), yb)) * len(xb)
    return total / max(len(x), 1)


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


def _check_torch_spec(config: ModelConfig, task: Task) -> None:
    if task == "regression" and config.training.class_weights != "none":
        raise ModelError(
            "class_weights weigh classes, but the run's task is regression",
            fix="remove model.training.class_weights",
            field="model.training.class_weights",
        )


def check_network_spec(config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
    """Build the network for these features without training it: a bad spec fails here."""
    _check_torch_spec(config, task)
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
    _check_torch_spec(config, task)
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
                _class_weights(codes[train_rows], n_outputs).to(device)
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
        record = _train_loop(network, loss, settings, x_train, y_train, x_val, y_val, seed)

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
    contract = ModelContract(
        estimator=config.architecture or "",
        params=config.params_dict(),
        feature_names=tuple(feature_names),
        classes=tuple(int(c) for c in classes),
        kind="torch",
        task=task,
        model_file="model.pt",
        versions={"torch": torch.__version__},
        config={
            "architecture": config.architecture,
            "params": config.params_dict(),
            "input_kind": "temporal" if layout is not None else "flat",
            "dims": asdict(dims),
            "layout": layout.to_dict() if layout is not None else None,
            "standardize": config.standardize is not False,
            "target_mean": target_mean,
            "target_scale": target_scale,
        },
        training={"settings": asdict(settings), "seed": seed, **record},
    )
    return model, contract


def _train_loop(
    network: nn.Module,
    loss: nn.Module,
    settings: TrainingConfig,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    seed: int,
) -> dict[str, Any]:
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    order = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(network.state_dict())
    waited = 0
    for epoch in range(1, settings.epochs + 1):
        network.train()
        total = 0.0
        for batch in _batches(len(x_train), settings.batch_size, order):
            batch = batch.to(x_train.device)
            optimizer.zero_grad(set_to_none=True)
            value = loss(network(x_train[batch]), y_train[batch])
            value.backward()
            optimizer.step()
            total += float(value.detach()) * len(batch)
        entry = {"epoch": epoch, "train_loss": total / max(len(x_train), 1)}
        if len(x_val):
            entry["validation_loss"] = _mean_loss(network, loss, x_val, y_val, 4096)
            if not np.isfinite(entry["validation_loss"]):
                raise ModelError(
                    f"the validation loss became {entry['validation_loss']} at epoch {epoch}",
                    fix="lower model.training.learning_rate",
                    field="model.training.learning_rate",
                )
            if entry["validation_loss"] < best_loss:
                best_loss, best_epoch, waited = entry["validation_loss"], epoch, 0
                best_state = copy.deepcopy(network.state_dict())
            else:
                waited += 1
        history.append(entry)
        if len(x_val) and waited >= settings.patience:
            break
    if len(x_val):
        network.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    network.eval()
    return {
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": len(history) < settings.epochs,
        "best_validation_loss": best_loss if len(x_val) else None,
        "history": history,
    }
