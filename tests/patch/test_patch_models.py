"""Patch networks: built-in and user modules checked on a dummy batch, training seeded, early
stopped with the best epoch kept, class weights, saved and reloaded, the CPU branch of device
auto (batches bounded by the worker's memory budget)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError
from pipeline.learn import check_model_spec, learner_for, load_model, save_model, train_model
from pipeline.learn.config import ModelConfig, PatchConfig
from pipeline.learn.patch.models import PatchDims, build_patch_network
from pipeline.learn.patch.train import per_patch_bytes
from pipeline.learn.torch.runtime import CPU_BATCH_BYTES, batch_for
from tests.patch.helpers import NAMES, one_thread, patch_model, toy_patches


@pytest.mark.parametrize("architecture", ["utae", "unet", "tests.patch.nets:PixelMean"])
def test_each_network_gives_a_score_per_class_and_pixel(architecture: str) -> None:
    dims = PatchDims(
        n_channels=2, n_times=3, n_outputs=4, positions=(0.0, 31.0, 60.0), patch_size=8
    )
    params = {"width": 4} if architecture != "tests.patch.nets:PixelMean" else {}
    network = build_patch_network(architecture, params, dims).eval()
    assert network(torch.zeros(1, 3, 2, 8, 8)).shape == (1, 4, 8, 8)


def test_a_user_module_with_the_wrong_output_shape_is_refused_by_name() -> None:
    config = ModelConfig(
        kind="torch_patch", architecture="tests.patch.nets:PooledToVector", patch=PatchConfig(8)
    )
    with pytest.raises(
        ModelError, match=r"PooledToVector returns \(2, 2\).*expected \(2, 2, 8, 8\)"
    ) as err:
        check_model_spec(config, "classification", NAMES)
    assert err.value.field == "model.architecture"
    with pytest.raises(ModelError, match="cannot be imported"):
        check_model_spec(
            ModelConfig(kind="torch_patch", architecture="tests.patch.nets:Missing"),
            "classification",
            NAMES,
        )
    with pytest.raises(ModelError, match="torch_patch models do classification only") as err:
        check_model_spec(patch_model(), "regression", NAMES)
    assert err.value.field == "model.kind"


def test_training_is_seeded_keeps_the_best_epoch_and_reloads(tmp_path: Path) -> None:
    x, y, g = toy_patches()
    config = patch_model(epochs=4, class_weights="balanced")
    with one_thread():
        model, contract = train_model(config, x, y, NAMES, seed=3, groups=g)
        again, _ = train_model(config, x, y, NAMES, seed=3, groups=g)
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, again.network.state_dict()[key]), key
    record = contract.training
    assert contract.kind == "torch_patch" and contract.classes == (1, 2, 3)
    assert record["validation_label_pixels"] > 0 and record["training_label_pixels"] > 0
    losses = [e["validation_loss"] for e in record["history"]]
    assert record["best_epoch"] == 1 + int(np.argmin(losses))
    assert record["best_validation_loss"] == min(losses)
    assert record["device"] == "cpu"

    folder = tmp_path / "model"
    save_model(model, contract, folder)
    loaded, reloaded = load_model(folder, device="cpu")
    assert learner_for("torch_patch").halo(reloaded) == 8  # 16 px patches, stride 8
    with one_thread():
        np.testing.assert_allclose(
            loaded.patch_probabilities(x[:2]), model.patch_probabilities(x[:2]), atol=1e-6
        )


def test_early_stopping_stops_after_patience() -> None:
    x, y, g = toy_patches()
    config = patch_model(epochs=30, learning_rate=0.5)  # overshoots: no better epoch for long
    with one_thread():
        _model, contract = train_model(config, x, y, NAMES, seed=0, groups=g)
    record = contract.training
    assert record["stopped_early"] and record["epochs_run"] < 30
    assert record["epochs_run"] - record["best_epoch"] == 2  # patience


def test_device_auto_on_a_cpu_bounds_the_batch_by_memory() -> None:
    dims = PatchDims(2, 3, 4, (0.0, 1.0, 2.0), 64)
    one = per_patch_bytes(dims, {}, True)
    device = torch.device("cpu")
    assert batch_for(device, one, 10_000) == CPU_BATCH_BYTES // one
    assert batch_for(device, one, 2) == 2
    assert batch_for(device, CPU_BATCH_BYTES * 4, 16) == 1
    if not torch.cuda.is_available():
        from pipeline.learn.torch.runtime import resolve_device

        assert resolve_device("auto").type == "cpu"
