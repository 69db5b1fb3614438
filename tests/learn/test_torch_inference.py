"""Torch inference (issue 22): inside a dask worker torch runs on the worker's threads, a chunk
is predicted in batches sized to it within the memory budget (a quarter of the worker's memory
per thread, at most 256 MiB), and the predictions are those of the network applied to the
whole table at once, for pixel and patch models alike."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster

from pipeline.learn import learner_for, load_model, save_model, train_model
from pipeline.learn.config import ModelConfig, TrainingConfig
from pipeline.learn.learner import PixelLearner
from pipeline.learn.patch.blend import blend_block
from pipeline.learn.torch.runtime import CPU_BATCH_BYTES, memory_budget, worker_threads
from pipeline.samples.tables import read_sample_table
from pipeline.warnings import SamplingWarning
from tests.learn.data import MODIS_NDVI
from tests.patch.helpers import NAMES, patch_model, toy_patches

THREADS, MEMORY = 3, 400 * 2**20


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)  # the in-process worker below sets the process's threads


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("models")
    modis = read_sample_table(MODIS_NDVI)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        spec = ModelConfig(
            kind="torch",
            architecture="tempcnn",
            params={"filters": 8, "dense": 16},
            training=TrainingConfig(epochs=2, batch_size=64),
        )
        pixel, contract = train_model(
            spec, modis.features, modis.codes, modis.feature_names, seed=0
        )
        save_model(pixel, contract, folder / "pixel")
        x, y, g = toy_patches()
        patch, contract = train_model(patch_model(epochs=1), x, y, NAMES, seed=0, groups=g)
        save_model(patch, contract, folder / "patch")
    torch.set_num_threads(previous)
    # A chunk of the MODIS pixels: (n_features, 29, 42), with a pixel missing a date.
    block = modis.features.T.reshape(len(modis.feature_names), 29, 42).copy()
    block[3, 5, 7] = np.nan
    return {"folder": folder, "block": block, "patches": x}


def _whole_table(network: torch.nn.Module, table: np.ndarray) -> np.ndarray:
    """The reference: the network applied to every row at once (what a batch of 16,384 rows
    gave for these 1,217 rows before batches were sized to the chunk)."""
    with torch.no_grad():
        return torch.softmax(network(torch.from_numpy(table)), dim=1).numpy()


def _in_worker(folder: Path, block: np.ndarray, patches: np.ndarray) -> dict[str, Any]:
    """As a prediction unit does: load the models, predict a chunk; what torch ran on."""
    pixel, _ = load_model(folder / "pixel", device="cpu")
    patch, contract = load_model(folder / "patch", device="cpu")
    torch.set_num_threads(1)  # as dask's nanny leaves it (OMP_NUM_THREADS=1)
    found = PixelLearner().predict_block(pixel, block, 0, "classification")
    pixel_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    halo = learner_for("torch_patch").halo(contract)
    padded = np.pad(patches[0], ((0, 0), (halo, halo), (halo, halo)), constant_values=np.nan)
    blended = learner_for("torch_patch").predict_block(patch, padded, halo, "classification")
    return {
        "worker_threads": worker_threads(),
        "pixel_threads": pixel_threads,
        "patch_threads": torch.get_num_threads(),
        "budget": memory_budget(torch.device("cpu")),
        "pixel": found,
        "patch": blended,
    }


def test_in_a_dask_worker_torch_predicts_on_its_threads_and_the_maps_are_unchanged(
    models: dict[str, Any],
) -> None:
    folder, block, patches = models["folder"], models["block"], models["patches"]
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=THREADS,
            memory_limit=MEMORY,
            processes=False,  # in this process: the test reads what torch ran on
            protocol="tcp",
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        got = client.submit(_in_worker, folder, block, patches, pure=False).result(timeout=120)
    assert got["worker_threads"] == THREADS
    assert got["pixel_threads"] == THREADS and got["patch_threads"] == THREADS
    assert got["budget"] == MEMORY // THREADS // 4  # less than 256 MiB: the worker's share
    assert worker_threads() is None and memory_budget(torch.device("cpu")) == CPU_BATCH_BYTES

    torch.set_num_threads(1)
    pixel, _ = load_model(folder / "pixel", device="cpu")
    table = block.reshape(block.shape[0], -1).T
    valid = ~np.isnan(table).any(axis=1)
    expected = _whole_table(pixel.network, np.ascontiguousarray(table[valid]))
    found = got["pixel"]
    assert found.valid.sum() == block.shape[1] * block.shape[2] - 1 and not found.valid[5, 7]
    np.testing.assert_allclose(found.probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(found.probabilities.argmax(1), expected.argmax(1))

    # The patch map outside the worker, on one thread and one patch per batch.
    patch, contract = load_model(folder / "patch", device="cpu")
    halo = learner_for("torch_patch").halo(contract)
    padded = np.pad(patches[0], ((0, 0), (halo, halo), (halo, halo)), constant_values=np.nan)
    alone = blend_block(padded, halo, patch.size, patch.stride, patch.patch_probabilities, 3, 1)
    assert got["patch"].valid.all()
    np.testing.assert_allclose(got["patch"].probabilities, alone.reshape(3, -1).T, atol=1e-6)


def test_a_chunk_is_one_batch_when_it_fits_else_equal_batches_within_the_budget(
    models: dict[str, Any],
) -> None:
    pixel, _ = load_model(models["folder"] / "pixel", device="cpu")
    n = 1217
    assert pixel.rows_per_batch(n) == n  # the chunk fits: one batch
    huge = 10**9  # rows: their activations are far over the budget
    rows = pixel.rows_per_batch(huge)
    assert rows < huge and rows * pixel.row_bytes <= CPU_BATCH_BYTES
    assert (rows + 1) * pixel.row_bytes > CPU_BATCH_BYTES // 2  # not needlessly small
    table = np.ascontiguousarray(models["block"].reshape(12, -1).T[:n])
    table = table[~np.isnan(table).any(axis=1)]
    whole = pixel.predict_proba(table)
    pixel.batch_size = 500  # a cap: 1,216 rows in 3 batches of 406, not 500 + 500 + 216
    assert pixel.rows_per_batch(len(table)) == 406
    np.testing.assert_allclose(pixel.predict_proba(table), whole, rtol=1e-5, atol=1e-7)

    patch, _ = load_model(models["folder"] / "patch", device="cpu")
    assert patch.patches_per_batch(9) == 9
    many = patch.patches_per_batch(10**6)
    assert many * patch.patch_bytes <= CPU_BATCH_BYTES < (many + 1) * patch.patch_bytes * 2
