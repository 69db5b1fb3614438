"""torch networks on real pixel time series: every architecture trains, predicts and reloads with
identical predictions; the loop is seeded, early-stopped and split by polygon."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import r2_score

from pipeline.errors import ModelError
from pipeline.learn import check_model_spec, load_model, save_model, train_model
from pipeline.learn.config import ModelConfig
from pipeline.learn.torch.estimator import TorchModel
from pipeline.learn.torch.training import class_weights, holdout_split
from pipeline.samples.tables import SampleTable, read_sample_table
from pipeline.warnings import SamplingWarning
from tests.learn.data import MODIS_NDVI, SLOVENIA_CLASSES, block_holdout, slovenia

SMALL = {
    "mlp": {"hidden": [64, 32]},
    "tempcnn": {"filters": 16, "dense": 64},
    "ltae": {"d_model": 32, "n_head": 4, "d_k": 4, "mlp": [32], "decoder": [16]},
    "tests.learn.nets:TinyGRU": {"hidden": 16},
    "tests.learn.nets:FlatLinear": {},
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def modis() -> SampleTable:
    return read_sample_table(MODIS_NDVI)


def torch_spec(architecture: str, **training: Any) -> ModelConfig:
    settings = {"epochs": 25, "patience": 5, "batch_size": 64, **training}
    return ModelConfig(
        kind="torch", architecture=architecture, params=SMALL[architecture], training=settings
    )


@pytest.mark.parametrize(
    ("architecture", "bound"),
    [
        ("mlp", 0.8),
        ("tempcnn", 0.8),
        ("ltae", 0.75),
        ("tests.learn.nets:TinyGRU", 0.7),
        ("tests.learn.nets:FlatLinear", 0.6),
    ],
)
def test_each_network_learns_the_modis_classes_and_reloads_identically(
    modis: SampleTable, architecture: str, bound: float, tmp_path: Path
) -> None:
    test = block_holdout(modis.location_ids, 0.25, seed=0)  # whole locations held out
    model, contract = train_model(
        torch_spec(architecture),
        modis.features[~test],
        modis.codes[~test],
        modis.feature_names,
        seed=0,
        groups=modis.location_ids[~test],
    )
    assert isinstance(model, TorchModel)
    assert list(model.classes_) == [1, 2, 3, 4]
    accuracy = float((model.predict(modis.features[test]) == modis.codes[test]).mean())
    majority = float(np.bincount(modis.codes[test]).max() / test.sum())
    assert majority < 0.4 and accuracy > bound

    save_model(model, contract, tmp_path / "net")
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == ["model.json", "model.pt"]
    again, reloaded = load_model(tmp_path / "net")
    assert reloaded.kind == "torch" and reloaded.feature_names == modis.feature_names
    proba = model.predict_proba(modis.features)
    np.testing.assert_array_equal(proba, again.predict_proba(modis.features))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_ltae_on_the_slovenia_cube_features(tmp_path: Path) -> None:
    """Cube-named features (s2_ndvi_YYYYMMDD): the layout and day positions come from them."""
    patch = slovenia()
    keep = np.isin(patch.lulc, SLOVENIA_CLASSES)
    test = block_holdout(patch.blocks, 0.25, seed=1)
    train = np.flatnonzero(keep & ~test)[::4]
    held = keep & test
    model, contract = train_model(
        torch_spec("ltae", epochs=10),
        patch.features[train],
        patch.lulc[train],
        patch.feature_names,
        seed=0,
        groups=patch.blocks[train],
    )
    layout = contract.config["layout"]
    assert layout["channels"] == ["s2_ndvi"] and layout["positions"][:3] == [0.0, 10.0, 20.0]
    accuracy = float((model.predict(patch.features[held]) == patch.lulc[held]).mean())
    assert accuracy > float((patch.lulc[held] == 2).mean())  # beats the majority class
    save_model(model, contract, tmp_path / "ltae")
    again, _ = load_model(tmp_path / "ltae")
    np.testing.assert_array_equal(model.predict(patch.features), again.predict(patch.features))


def test_a_temporal_model_takes_encoder_features_as_static_channels(tmp_path: Path) -> None:
    """Cube features plus an encoder's outputs (<encoder>_eNN, no date): the model trains on
    them, its layout lists them as channels, and it reloads to the same predictions."""
    patch = slovenia()
    keep = np.flatnonzero(np.isin(patch.lulc, SLOVENIA_CLASSES))[::6]
    ndvi = patch.features[keep]
    embedding = np.stack([ndvi.mean(axis=1), ndvi.std(axis=1)], axis=1)  # a stand-in encoder
    table = np.concatenate([ndvi, embedding], axis=1).astype(np.float32)
    names = [*patch.feature_names, "tiny_e00", "tiny_e01"]
    model, contract = train_model(
        torch_spec("tempcnn", epochs=3), table, patch.lulc[keep], names, seed=0
    )
    assert contract.config["layout"]["channels"] == ["s2_ndvi", "tiny_e00", "tiny_e01"]
    save_model(model, contract, tmp_path / "tempcnn")
    again, _ = load_model(tmp_path / "tempcnn")
    np.testing.assert_array_equal(model.predict(table), again.predict(table))


def test_regression_head_on_max_ndvi(tmp_path: Path) -> None:
    patch = slovenia()
    test = block_holdout(patch.blocks, 0.25, seed=0)
    train = np.flatnonzero(~test)[::3]
    model, contract = train_model(
        torch_spec("tempcnn", epochs=30, batch_size=128),
        patch.features[train],
        patch.max_ndvi[train],
        patch.feature_names,
        seed=0,
        task="regression",
        groups=patch.blocks[train],
    )
    assert contract.task == "regression" and contract.classes == ()
    with pytest.raises(AttributeError):
        _ = model.classes_
    predicted = model.predict(patch.features[test])
    assert r2_score(patch.max_ndvi[test], predicted) > 0.5
    # Targets are standardized for training and scaled back: predictions are in NDVI units.
    assert 0.3 < float(np.median(predicted)) < 0.9
    save_model(model, contract, tmp_path / "reg")
    again, _ = load_model(tmp_path / "reg")
    np.testing.assert_array_equal(predicted, again.predict(patch.features[test]))


def _small(modis: SampleTable, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return modis.features[:n], modis.codes[:n], modis.location_ids[:n]


def test_same_seed_same_weights_and_the_callers_rng_is_untouched(modis: SampleTable) -> None:
    X, y, groups = _small(modis)
    spec = torch_spec("tempcnn", epochs=3)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first, _ = train_model(spec, X, y, modis.feature_names, seed=7, groups=groups)
    assert torch.equal(torch.rand(3), expected_next)  # training forked the global RNG
    assert not torch.are_deterministic_algorithms_enabled()  # and restored the setting
    second, _ = train_model(spec, X, y, modis.feature_names, seed=7, groups=groups)
    other, _ = train_model(spec, X, y, modis.feature_names, seed=8, groups=groups)
    a, b, c = (m.network.state_dict() for m in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_early_stopping_keeps_the_best_epoch(modis: SampleTable) -> None:
    X, y, groups = _small(modis, 600)
    spec = torch_spec("mlp", epochs=200, patience=3, learning_rate=0.05)
    _, contract = train_model(spec, X, y, modis.feature_names, seed=0, groups=groups)
    record = contract.training
    losses = [e["validation_loss"] for e in record["history"]]
    assert record["stopped_early"] and record["epochs_run"] < 200
    assert record["best_epoch"] == int(np.argmin(losses)) + 1
    assert record["epochs_run"] == record["best_epoch"] + 3
    assert record["best_validation_loss"] == min(losses)
    # The validation groups are whole locations, none of them trained on.
    assert record["validation_groups"] >= 1
    assert record["training_samples"] + record["validation_samples"] == len(X)


def test_balanced_class_weights() -> None:
    codes = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(class_weights(codes, 2).numpy(), [4 / 6, 4 / 2])


def test_balanced_weights_raise_the_recall_of_a_rare_class(modis: SampleTable) -> None:
    rng = np.random.default_rng(0)
    forest = np.flatnonzero(modis.codes == 2)
    others = np.flatnonzero(modis.codes != 2)
    rows = np.concatenate([rng.choice(forest, 15, replace=False), others[::2]])
    test = np.setdiff1d(forest, rows)
    recalls = {}
    for weights in ("none", "balanced"):
        spec = torch_spec("mlp", epochs=15, class_weights=weights)
        model, contract = train_model(
            spec, modis.features[rows], modis.codes[rows], modis.feature_names, seed=0
        )
        assert contract.training["settings"]["class_weights"] == weights
        recalls[weights] = float((model.predict(modis.features[test]) == 2).mean())
    assert recalls["balanced"] > recalls["none"]


@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=40),
    group_size=st.integers(1, 4),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 1000),
)
def test_holdout_keeps_groups_whole_and_every_class_trained(
    labels: list[int], group_size: int, fraction: float, seed: int
) -> None:
    group_labels = np.array(labels)
    targets = np.repeat(group_labels, group_size)
    groups = np.repeat(np.arange(len(labels)), group_size)
    held = holdout_split(targets, groups, fraction, seed, stratify=True)
    for g in range(len(labels)):
        assert len(set(held[groups == g])) == 1  # a group sits on one side only
    for label in set(labels):
        n = labels.count(label)
        n_held = len(np.unique(groups[held & (targets == label)]))
        expected = 0 if n == 1 else min(max(round(n * fraction), 1), n - 1)
        assert n_held == expected


def test_a_class_with_one_polygon_trains_without_early_stopping(modis: SampleTable) -> None:
    X, y, _ = _small(modis, 200)
    groups = y.copy()  # one polygon per class: nothing can be held out
    with pytest.warns(SamplingWarning, match="without early stopping"):
        _, contract = train_model(
            torch_spec("mlp", epochs=4), X, y, modis.feature_names, seed=0, groups=groups
        )
    assert contract.training["epochs_run"] == 4 and contract.training["validation_samples"] == 0


@pytest.mark.parametrize(
    ("architecture", "params", "training", "field", "words"),
    [
        ("tests.learn.nets:WrongWidth", {}, {}, "model.architecture",
         "for a batch of shape (2, 12, 1), expected (2, "),
        ("tests.learn.nets:NotAModule", {}, {}, "model.architecture",
         "not a torch.nn.Module"),
        ("tests.learn.nets:Missing", {}, {}, "model.architecture", "cannot be imported"),
        ("tempcnn", {"n_outputs": 3}, {}, "model.params", "derives from the data"),
        ("tempcnn", {"filter": 8}, {}, "model.params", "filters, kernel_size"),
        ("tempcnn", {"kernel_size": 4}, {}, "model.params", "kernel_size must be odd"),
        ("ltae", {"d_model": 30, "n_head": 4}, {}, "model.params", "multiple of n_head"),
        ("mlp", {}, {"device": "cuda"}, "model.training.device", "no CUDA GPU"),
    ],
)  # fmt: skip
def test_bad_network_specs_fail_before_training(
    modis: SampleTable,
    architecture: str,
    params: dict[str, Any],
    training: dict[str, Any],
    field: str,
    words: str,
) -> None:
    if training.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = ModelConfig(kind="torch", architecture=architecture, params=params, training=training)
    X, y, _ = _small(modis, 40)
    for attempt in (
        lambda: check_model_spec(spec, "classification", modis.feature_names),
        lambda: train_model(spec, X, y, modis.feature_names, seed=0),
    ):
        with pytest.raises(ModelError) as err:
            attempt()
        assert err.value.field == field
        assert words in str(err.value)


def test_temporal_networks_refuse_features_on_different_dates() -> None:
    names = [f"s2_ndvi_2017{m:02d}01" for m in range(1, 13)] + ["l8_ndvi_20170105"]
    with pytest.raises(ModelError, match="same dates"):
        check_model_spec(ModelConfig(kind="torch", architecture="tempcnn"), "classification", names)
    # The MLP takes features on any dates.
    check_model_spec(ModelConfig(kind="torch", architecture="mlp"), "classification", names)


def test_bad_training_data(modis: SampleTable) -> None:
    X, y, _ = _small(modis, 40)
    with pytest.raises(ModelError, match="NaN or infinite features"):
        bad = X.copy()
        bad[3, 2] = np.nan
        train_model(torch_spec("mlp"), bad, y, modis.feature_names, seed=0)
    spec = ModelConfig(kind="torch", architecture="mlp", training={"class_weights": "balanced"})
    with pytest.raises(ModelError, match="class_weights weigh classes"):
        train_model(spec, X, X[:, 0], modis.feature_names, seed=0, task="regression")


def test_damaged_model_folders_are_refused(modis: SampleTable, tmp_path: Path) -> None:
    X, y, _ = _small(modis, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        model, contract = train_model(torch_spec("mlp", epochs=1), X, y, modis.feature_names, 0)
        other, other_contract = train_model(
            torch_spec("tempcnn", epochs=1), X, y, modis.feature_names, 0
        )
    save_model(model, contract, tmp_path / "a")
    save_model(other, other_contract, tmp_path / "b")
    (tmp_path / "a" / "model.pt").replace(tmp_path / "b" / "model.pt")
    with pytest.raises(ModelError, match="do not fit the network"):
        load_model(tmp_path / "b")
    with pytest.raises(ModelError, match="do not exist"):
        load_model(tmp_path / "a")
    contract_file = tmp_path / "b" / "model.json"
    data = json.loads(contract_file.read_text())
    del data["feature_names"]
    contract_file.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="not a sitsflow model contract"):
        load_model(tmp_path / "b")
