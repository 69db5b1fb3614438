"""Training a patch network: patches and their dense labels to a fitted patch model.

* Inputs: (n, n_features, size, size) patches (NaN where missing), dense labels (n, size, size)
  with ``IGNORE`` where a pixel is not a training label, and each label's polygon.
* Held out for early stopping: a share of the training polygons (stratified by class, as the
  pixel networks do); their pixels are validation labels, masked out of the training loss even
  inside patches that also hold training labels.
* The loop, seeding, early stopping, the best epoch and class weights are those of every torch
  kind (``pipeline/learn/torch/training.py``); a patch kind feeds it batches of patches kept on
  the CPU and moved to the device one batch at a time, a loss that ignores the ``IGNORE``
  pixels (and means over the labelled ones), and augmentation: a random quarter rotation and
  flip per batch, the same for features and labels.
* Devices: ``auto`` is a CUDA GPU when present, with bfloat16 mixed precision and batches sized
  from its free memory; the CPU otherwise. Same seed, same data, same device: the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.config import ModelConfig, PatchConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.patch.models import PatchDims, build_patch_network
from pipeline.learn.preflight import check_task_settings
from pipeline.learn.torch import training
from pipeline.learn.torch.blocks import Standardized
from pipeline.learn.torch.layout import TemporalLayout, from_feature_names
from pipeline.learn.torch.runtime import batch_for, resolve_device

IGNORE = -1  # pipeline.samples.patches.IGNORE (learn does not import samples)
TASKS: tuple[Task, ...] = ("classification",)


class PatchNetwork(Standardized):
    """Gathering the features into (time, channels), normalization, missing values as the
    channel's mean (0 after normalization), then the core network."""

    def __init__(self, core: nn.Module, layout: TemporalLayout) -> None:
        super().__init__(core, layout.n_channels, layout.gather_index())
        self.shape = (layout.n_times, layout.n_channels)

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
    """Build the network for these features without training it: a bad spec fails here (the
    learner's preflight, ``pipeline.learn.preflight``, checks the task first)."""
    patch = patch_config(config)
    if patch.step > patch.size:
        raise ModelError(
            f"patch stride {patch.step} is larger than the patch size {patch.size}",
            fix="set model.patch.stride to at most model.patch.size",
            field="model.patch.stride",
        )
    resolve_device(config.training.device)
    prepare_patch_network(config, feature_names, 2)


def patch_dims(config: Mapping[str, Any]) -> PatchDims:
    """The dimensions recorded in a contract's config."""
    return PatchDims(**{**config["dims"], "positions": tuple(config["dims"]["positions"])})


def rebuild_patch_network(contract: ModelContract) -> PatchNetwork:
    """The untrained patch network described by a contract's config."""
    config = contract.config
    dims = patch_dims(config)
    layout = TemporalLayout.from_dict(config["layout"], contract.feature_names)
    core = build_patch_network(str(config["architecture"]), dict(config["params"]), dims)
    return PatchNetwork(core, layout)


def _normalization(features: np.ndarray, layout: TemporalLayout) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the finite values."""
    n = features.shape[0]
    series = features[:, layout.gather_index()].reshape(n, layout.n_times, layout.n_channels, -1)
    values = np.moveaxis(series, 2, 0).reshape(layout.n_channels, -1)
    mean = np.nan_to_num(np.asarray(np.nanmean(values, axis=1, dtype=np.float64)))
    scale = np.asarray(np.nanstd(values, axis=1, dtype=np.float64))
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def _labelled(y: torch.Tensor) -> int:
    """The labels of a batch: its pixels the loss does not ignore."""
    return int((y != IGNORE).sum())


def _augment(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
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

    check_task_settings(config, task, TASKS)
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
    held[labelled] = training.holdout_split(
        codes_flat, polygons, config.training.validation_fraction, seed, stratify=True
    )
    train_codes = np.where(labelled & ~held, codes, IGNORE)
    val_codes = np.where(held, codes, IGNORE)
    train_rows = (train_codes != IGNORE).any(axis=(1, 2))
    val_rows = (val_codes != IGNORE).any(axis=(1, 2))

    settings = config.training
    device = resolve_device(settings.device)
    with training.seeded(seed, device, warn_only=device.type == "cuda"):
        network, layout, dims = prepare_patch_network(config, feature_names, len(classes))
        if config.standardize is not False:
            network.set_normalization(*_normalization(features[train_rows], layout))
        network.to(device)
        weights = None
        if settings.class_weights == "balanced":
            labels = train_codes[train_codes != IGNORE]
            weights = training.class_weights(labels, len(classes)).to(device)
        loss = nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE)
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        batch = batch_for(
            device, per_patch_bytes(dims, config.params_dict(), True), settings.batch_size
        )
        feed = training.Feed(
            device,
            batch,
            batch,
            labels=_labelled,
            augment=_augment if patch.augment else None,
            mixed_precision=True,
        )
        record = training.train_loop(
            network,
            loss,
            settings,
            (x[train_rows], torch.from_numpy(train_codes[train_rows])),
            (x[val_rows], torch.from_numpy(val_codes[val_rows])),
            seed,
            feed,
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
    details = {
        "dims": asdict(dims),
        "layout": layout.to_dict(),
        "patch": {"size": patch.size, "stride": patch.step},
        "standardize": config.standardize is not False,
    }
    contract = training.network_contract(
        config,
        kind="torch_patch",
        task=task,
        feature_names=feature_names,
        classes=classes,
        details=details,
        seed=seed,
        record=record,
    )
    model = PatchModel(
        network, classes, patch.size, patch.step, "cpu", dims=dims, params=config.params_dict()
    )
    return model, contract
