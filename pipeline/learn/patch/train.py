"""Training a patch network: seeded, augmented, early-stopped on polygons held out whole.

* Inputs: (n, n_features, size, size) patches (NaN where missing), dense labels (n, size, size)
  with ``IGNORE`` where a pixel is not a training label, and each label's polygon.
* Held out for early stopping: a share of the training polygons (stratified by class, as the
  pixel networks do); their pixels are validation labels, masked out of the training loss even
  inside patches that also hold training labels.
* Augmentation: a random quarter rotation and flip per batch, the same for features and labels.
* Class weights (``balanced``), early stopping with ``patience``, the best epoch's weights kept.
* Devices: ``auto`` is a CUDA GPU when present, with bfloat16 mixed precision and batches sized
  from its free memory; the CPU otherwise. Same seed, same data, same device: the same weights.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.config import ModelConfig, PatchConfig, TrainingConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.patch.models import PatchDims, build_patch_network
from pipeline.learn.torch.estimator import resolve_device
from pipeline.learn.torch.layout import TemporalLayout, from_feature_names
from pipeline.learn.torch.train import holdout_split

IGNORE = -1  # pipeline.samples.patches.IGNORE (learn does not import samples)
CPU_BATCH_BYTES = 256 * 2**20  # activations per batch on a CPU worker: bounded memory


class PatchNetwork(nn.Module):
    """Gathering the features into (time, channels), normalization, missing values as the
    channel's mean (0 after normalization), then the core network."""

    mean: torch.Tensor
    scale: torch.Tensor
    gather: torch.Tensor

    def __init__(self, core: nn.Module, layout: TemporalLayout) -> None:
        super().__init__()
        self.core = core
        self.shape = (layout.n_times, layout.n_channels)
        self.register_buffer("mean", torch.zeros(layout.n_channels))
        self.register_buffer("scale", torch.ones(layout.n_channels))
        gather = torch.from_numpy(layout.gather_index())
        self.register_buffer("gather", gather, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        series = x[:, self.gather].reshape(batch, *self.shape, height, width)
        series = (series - self.mean[:, None, None]) / self.scale[:, None, None]
        out: torch.Tensor = self.core(torch.nan_to_num(series, nan=0.0))
        return out


def patch_config(config: ModelConfig) -> PatchConfig:
    return config.patch if config.patch is not None else PatchConfig()


def per_patch_bytes(dims: PatchDims, params: dict[str, Any], training: bool) -> int:
    """A rough upper bound of the activation memory of one patch (float32)."""
    d_model = int(params.get("d_model", 32))
    width = int(params.get("width", 32))
    per_pixel = dims.n_times * (dims.n_channels + 6 * d_model) + 12 * width
    return 4 * dims.patch_size**2 * per_pixel * (3 if training else 1)


def batch_for(device: torch.device, patch_bytes: int, requested: int) -> int:
    """Patches per batch: what a GPU's free memory holds (half of it), or the CPU budget; never
    more than ``requested``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        fits = int(0.5 * free // max(patch_bytes, 1))
    else:
        fits = int(CPU_BATCH_BYTES // max(patch_bytes, 1))
    return max(1, min(requested, fits))


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 mixed precision on a GPU (no loss scaling needed), full precision on a CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and prefer deterministic algorithms, restoring the caller's settings after
    (on a GPU an op without a deterministic kernel warns instead of failing)."""
    previous = torch.are_deterministic_algorithms_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


def prepare_patch_network(
    config: ModelConfig, feature_names: Sequence[str], n_outputs: int
) -> tuple[PatchNetwork, TemporalLayout, PatchDims]:
    assert config.architecture is not None  # the manifest requires it for kind torch_patch
    layout = from_feature_names(feature_names)
    dims = PatchDims(
        n_channels=layout.n_channels,
        n_times=layout.n_times,
        n_outputs=n_outputs,
        positions=layout.positions,
        patch_size=patch_config(config).size,
    )
    core = build_patch_network(config.architecture, config.params_dict(), dims)
    return PatchNetwork(core, layout), layout, dims


def check_patch_spec(config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
    if task != "classification":
        raise ModelError(
            f"patch models classify; the run's task is {task}",
            fix="use kind torch or sklearn for regression, or task: classification",
            field="model.kind",
        )
    patch = patch_config(config)
    if patch.step > patch.size:
        raise ModelError(
            f"patch stride {patch.step} is larger than the patch size {patch.size}",
            fix="set model.patch.stride to at most model.patch.size",
            field="model.patch.stride",
        )
    resolve_device(config.training.device)
    prepare_patch_network(config, feature_names, 2)


def _normalization(features: np.ndarray, layout: TemporalLayout) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the finite values."""
    n = features.shape[0]
    series = features[:, layout.gather_index()].reshape(n, layout.n_times, layout.n_channels, -1)
    values = np.moveaxis(series, 2, 0).reshape(layout.n_channels, -1)
    mean = np.nan_to_num(np.asarray(np.nanmean(values, axis=1, dtype=np.float64)))
    scale = np.asarray(np.nanstd(values, axis=1, dtype=np.float64))
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[Any, Any]:
    turns, flip = torch.randint(0, 4, (2,), generator=generator).tolist()
    x, y = torch.rot90(x, turns, dims=(-2, -1)), torch.rot90(y, turns, dims=(-2, -1))
    if flip % 2:
        x, y = torch.flip(x, dims=(-1,)), torch.flip(y, dims=(-1,))
    return x, y


def fit_patch_network(
    config: ModelConfig,
    features: np.ndarray,
    targets: np.ndarray,
    feature_names: Sequence[str],
    seed: int,
    *,
    task: Task = "classification",
    groups: np.ndarray | None = None,
) -> tuple[Any, ModelContract]:
    """Train the patch network of ``config``; ``features`` (n, n_features, size, size),
    ``targets`` (n, size, size) class codes or IGNORE, ``groups`` the labels' polygons."""
    from pipeline.learn.patch.learner import PatchModel

    check_patch_spec(config, task, feature_names)
    patch = patch_config(config)
    size = patch.size
    if features.ndim != 4 or features.shape[1:] != (len(feature_names), size, size):
        raise ModelError(
            f"patch training takes (patches, {len(feature_names)}, {size}, {size}) features, got "
            f"{features.shape}",
            fix="train a patch model on the patch samples of a run (samples/patches.zarr)",
            field="model.patch.size",
        )
    targets = np.asarray(targets, dtype=np.int64)
    labelled = targets != IGNORE
    if not labelled.any():
        raise ModelError(
            "no training patch holds a labelled pixel",
            fix="check that the reference covers the mapped area",
            field="reference",
        )
    classes, codes_flat = np.unique(targets[labelled], return_inverse=True)
    codes = np.full(targets.shape, IGNORE, np.int64)
    codes[labelled] = codes_flat
    polygons = groups[labelled] if groups is not None else None
    held = np.zeros(targets.shape, dtype=bool)
    held[labelled] = holdout_split(
        codes_flat, polygons, config.training.validation_fraction, seed, stratify=True
    )
    train_codes = np.where(labelled & ~held, codes, IGNORE)
    val_codes = np.where(held, codes, IGNORE)
    train_rows = (train_codes != IGNORE).any(axis=(1, 2))
    val_rows = (val_codes != IGNORE).any(axis=(1, 2))

    settings = config.training
    device = resolve_device(settings.device)
    with seeded(seed, device):
        network, layout, dims = prepare_patch_network(config, feature_names, len(classes))
        if config.standardize is not False:
            mean, scale = _normalization(features[train_rows], layout)
            network.mean.copy_(torch.from_numpy(mean))
            network.scale.copy_(torch.from_numpy(scale))
        network.to(device)
        weights = None
        if settings.class_weights == "balanced":
            counts = np.bincount(train_codes[train_codes != IGNORE], minlength=len(classes))
            balanced = counts.sum() / (len(classes) * np.maximum(counts, 1))
            weights = torch.as_tensor(balanced, dtype=torch.float32, device=device)
        loss = nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE)
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        batch = batch_for(
            device, per_patch_bytes(dims, config.params_dict(), True), settings.batch_size
        )
        record = _train_loop(
            network,
            loss,
            settings,
            (x[train_rows], torch.from_numpy(train_codes[train_rows])),
            (x[val_rows], torch.from_numpy(val_codes[val_rows])),
            seed,
            device,
            batch,
            augment=patch.augment,
        )
    network.to("cpu").eval()
    record.update(
        {
            "device": str(device),
            "batch_patches": batch,
            "training_patches": int(train_rows.sum()),
            "validation_patches": int(val_rows.sum()),
            "training_label_pixels": int((train_codes != IGNORE).sum()),
            "validation_label_pixels": int((val_codes != IGNORE).sum()),
        }
    )
    contract = ModelContract(
        estimator=config.architecture or "",
        params=config.params_dict(),
        feature_names=tuple(feature_names),
        classes=tuple(int(c) for c in classes),
        kind="torch_patch",
        task=task,
        model_file="model.pt",
        versions={"torch": torch.__version__},
        config={
            "architecture": config.architecture,
            "params": config.params_dict(),
            "dims": asdict(dims),
            "layout": layout.to_dict(),
            "patch": {"size": patch.size, "stride": patch.step},
            "standardize": config.standardize is not False,
        },
        training={"settings": asdict(settings), "seed": seed, **record},
    )
    model = PatchModel(
        network, classes, patch.size, patch.step, "cpu", dims=dims, params=config.params_dict()
    )
    return model, contract


def _mean_loss(
    network: nn.Module, loss: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch: int,
    device: torch.device,
) -> float:  # fmt: skip
    x, y = data
    network.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(device):
        for start in range(0, len(x), batch):
            yb = y[start : start + batch].to(device)
            n = int((yb != IGNORE).sum())
            out = network(x[start : start + batch].to(device)).float()
            total += float(loss(out, yb)) * n
            count += n
    return total / max(count, 1)


def _train_loop(
    network: nn.Module,
    loss: nn.Module,
    settings: TrainingConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    device: torch.device,
    batch: int,
    *,
    augment: bool,
) -> dict[str, Any]:
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    order = torch.Generator().manual_seed(seed)
    x_train, y_train = train
    has_validation = len(validation[0]) > 0
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(network.state_dict())
    waited = 0
    for epoch in range(1, settings.epochs + 1):
        network.train()
        total, seen = 0.0, 0
        for rows in torch.split(torch.randperm(len(x_train), generator=order), batch):
            if len(rows) < 2 and len(x_train) > 1:
                continue  # batch norm cannot train on one patch; it is drawn again next epoch
            xb, yb = x_train[rows], y_train[rows]
            if augment:
                xb, yb = _augment(xb, yb, order)
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                value = loss(network(xb).float(), yb)
            value.backward()
            optimizer.step()
            n = int((yb != IGNORE).sum())
            total += float(value.detach()) * n
            seen += n
        entry = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if has_validation:
            entry["validation_loss"] = _mean_loss(network, loss, validation, batch, device)
            if not np.isfinite(entry["validation_loss"]):
                raise ModelError(
                    f"the validation loss became {entry['validation_loss']} at epoch {epoch}",
                    fix="lower model.training.learning_rate",
                    field="model.training.learning_rate",
                )
            if entry["validation_loss"] < best_loss:
                best_loss, best_epoch, waited = entry["validation_loss"], epoch, 0
                best_state = copy.deepcopy(network.state_dict())  # the checkpoint kept
            else:
                waited += 1
        history.append(entry)
        if has_validation and waited >= settings.patience:
            break
    if has_validation:
        network.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    return {
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": len(history) < settings.epochs,
        "best_validation_loss": best_loss if has_validation else None,
        "history": history,
    }
