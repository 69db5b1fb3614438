"""The one training loop of the torch kinds (pixel networks and patch networks).

* Reproducible: the network's initialization, the batch order, augmentation and dropout draw
  from generators seeded with the run's seed, under ``torch.use_deterministic_algorithms``; the
  caller's global RNG state and determinism setting are restored afterwards. Same seed, same
  data, same device: the same weights.
* Validation: a share of the training polygons (stratified by class) is held out; pixels of one
  polygon never sit on both sides, else early stopping would measure memorized fields.
* Early stopping on the validation loss with ``patience``; the best epoch's weights are kept.
* Class weights (optional): the inverse of each class's frequency, as scikit-learn's "balanced".

What differs between the kinds is passed in as a :class:`Feed`: where the batches are computed
and how large they are, how many labels a batch's targets hold (patches mask the pixels that
are not labels, which the loss ignores), an augmentation, and mixed precision.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.learn.config import ModelConfig, TrainingConfig
from pipeline.learn.contract import ModelContract, Task
from pipeline.learn.torch.runtime import autocast

__all__ = [
    "WEIGHTS_FILE",
    "Feed",
    "class_weights",
    "holdout_split",
    "network_contract",
    "seeded",
    "train_loop",
]

WEIGHTS_FILE = "model.pt"
Pair = tuple[torch.Tensor, torch.Tensor]


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
def seeded(seed: int, device: torch.device, *, warn_only: bool = False) -> Iterator[None]:
    """Seed torch and use deterministic algorithms, restoring the caller's settings after
    (``warn_only``: an op without a deterministic kernel warns instead of failing)."""
    previous = torch.are_deterministic_algorithms_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace (documented by PyTorch).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


def class_weights(codes: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse class frequencies of the training labels ``codes`` (0 .. n_classes - 1)."""
    counts = np.bincount(codes, minlength=n_classes)
    balanced = counts.sum() / (n_classes * np.maximum(counts, 1))
    return torch.as_tensor(balanced, dtype=torch.float32)


def _rows(y: torch.Tensor) -> int:
    return len(y)


@dataclass(frozen=True)
class Feed:
    """How a kind's batches go through the loop.

    ``batch`` samples per training step and ``eval_batch`` per validation step, computed on
    ``device`` (the tensors given to :func:`train_loop` may live on the CPU: each batch is moved).
    ``labels`` counts the labels in a batch's targets (the loss's mean is over them: rows for
    pixels, labelled pixels for patches). ``augment`` transforms a training batch (features and
    targets together) with the loop's generator. ``mixed_precision``: bfloat16 on a GPU.
    """

    device: torch.device
    batch: int
    eval_batch: int
    labels: Callable[[torch.Tensor], int] = _rows
    augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Pair] | None = None
    mixed_precision: bool = False


def _batches(n: int, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    batches = list(torch.split(order, batch))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()  # batch norm cannot train on one sample; it is drawn again next epoch
    return batches


def _mean_loss(network: nn.Module, loss: nn.Module, data: Pair, feed: Feed) -> float:
    x, y = data
    network.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(feed.device, feed.mixed_precision):
        for start in range(0, len(x), feed.eval_batch):
            yb = y[start : start + feed.eval_batch].to(feed.device)
            out = network(x[start : start + feed.eval_batch].to(feed.device)).float()
            n = feed.labels(yb)
            total += float(loss(out, yb)) * n
            count += n
    return total / max(count, 1)


def train_loop(
    network: nn.Module,
    loss: nn.Module,
    settings: TrainingConfig,
    train: Pair,
    validation: Pair,
    seed: int,
    feed: Feed,
) -> dict[str, Any]:
    """Train ``network`` in place (AdamW, early stopping, the best epoch's weights kept); the
    training record (epochs, best epoch, history)."""
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
        for rows in _batches(len(x_train), feed.batch, order):
            rows = rows.to(x_train.device)
            xb, yb = x_train[rows], y_train[rows]
            if feed.augment is not None:
                xb, yb = feed.augment(xb, yb, order)
            xb, yb = xb.to(feed.device), yb.to(feed.device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(feed.device, feed.mixed_precision):
                value = loss(network(xb).float(), yb)
            value.backward()
            optimizer.step()
            n = feed.labels(yb)
            total += float(value.detach()) * n
            seen += n
        entry = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if has_validation:
            entry["validation_loss"] = _mean_loss(network, loss, validation, feed)
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
    network.eval()
    return {
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "stopped_early": len(history) < settings.epochs,
        "best_validation_loss": best_loss if has_validation else None,
        "history": history,
    }


def network_contract(
    config: ModelConfig,
    *,
    kind: str,
    task: Task,
    feature_names: Sequence[str],
    classes: np.ndarray,
    details: Mapping[str, Any],
    seed: int,
    record: Mapping[str, Any],
) -> ModelContract:
    """The contract of a trained network: ``details`` (dimensions, layout...) after the
    architecture and its params in ``config``, what :mod:`persist` rebuilds it from."""
    return ModelContract(
        estimator=config.architecture or "",
        params=config.params_dict(),
        feature_names=tuple(feature_names),
        classes=tuple(int(c) for c in classes),
        kind=kind,
        task=task,
        model_file=WEIGHTS_FILE,
        versions={"torch": torch.__version__},
        config={"architecture": config.architecture, "params": config.params_dict(), **details},
        training={"settings": asdict(config.training), "seed": seed, **record},
    )
