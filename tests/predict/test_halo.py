"""The Learner seam from outside the package: a toy learner that reads neighbouring pixels (a 3x3
mean of one feature, then a threshold), registered by this test module, trained, saved, loaded
and predicted chunk by chunk through the chain's own entry points. Its map equals the same
filter applied to the whole image: the halo read is right at chunk borders and grid edges."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from pipeline.errors import ModelError
from pipeline.learn import (
    BlockPrediction,
    ModelConfig,
    ModelContract,
    check_model_spec,
    learner_for,
    load_model,
    register_learner,
    save_model,
    train_model,
)
from pipeline.learn.contract import CONTRACT_FILE, Task
from pipeline.learn.learner import core_of
from pipeline.model import GridSpec, Window
from pipeline.predict.blockwise import (
    CONFIDENCE_VARIABLE,
    LABEL_VARIABLE,
    MapEncoding,
    PredictTask,
    create_map_store,
    predict_chunk,
    probability_variable,
    read_block,
)
from pipeline.storage import atomic_path

KIND = "toy-mean3"
CHUNK = 16
# Not a multiple of the chunk: the last row and column of chunks are partial.
GRID = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 45, 37)
VARIABLES = (("s2_ndvi", "s2_time"), ("s2_red", "s2_time"))
NAMES = ("s2_ndvi_t0", "s2_ndvi_t1", "s2_red_t0")


def mean3(block: np.ndarray) -> np.ndarray:
    """The mean of the finite values of ``block``'s first feature in each 3x3 neighbourhood,
    for every pixel but the outer ring (off-grid and missing pixels are NaN and do not count)."""
    x = block[0]
    finite = np.isfinite(x)
    values = np.where(finite, x, 0.0).astype(np.float64)
    height, width = x.shape[0] - 2, x.shape[1] - 2
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    for dr in range(3):
        for dc in range(3):
            total += values[dr : dr + height, dc : dc + width]
            count += finite[dr : dr + height, dc : dc + width]
    return total / np.maximum(count, 1)


class MeanFilterLearner:
    """A 3x3 mean of the first feature, as the probability of the higher class."""

    kind = KIND

    def check(self, config: ModelConfig, task: Task, feature_names: Sequence[str]) -> None:
        if task != "classification":
            raise ModelError("the toy classifies only", fix="use a classification task")

    def fit(
        self,
        config: ModelConfig,
        features: np.ndarray,
        targets: np.ndarray,
        feature_names: Sequence[str],
        seed: int,
        *,
        task: Task,
        groups: np.ndarray | None,
    ) -> tuple[Any, ModelContract]:
        self.check(config, task, feature_names)
        classes = tuple(int(c) for c in np.unique(targets))
        contract = ModelContract(
            estimator="toy.mean3",
            params=config.params_dict(),
            feature_names=tuple(feature_names),
            classes=classes,
            kind=KIND,
            model_file=CONTRACT_FILE,
            config={"radius": 1},
        )
        return np.asarray(classes), contract

    def save(self, model: Any, contract: ModelContract, folder: Path) -> None:
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            (tmp / CONTRACT_FILE).write_text(contract.to_json(), encoding="utf-8")

    def load(self, folder: Path, contract: ModelContract, *, device: str = "auto") -> Any:
        return np.asarray(contract.classes)

    def halo(self, contract: ModelContract) -> int:
        return int(contract.config["radius"])

    def predict_block(
        self, model: Any, block: np.ndarray, halo: int, task: Task
    ) -> BlockPrediction:
        assert halo == 1, "the 3x3 mean needs one pixel around the block"
        probability = np.clip(mean3(block), 0.0, 1.0)
        valid = np.isfinite(core_of(block, halo)).all(axis=0)
        p = probability[valid]
        return BlockPrediction(valid, model, np.stack([1.0 - p, p], axis=1))


register_learner(MeanFilterLearner(), replace=True)


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    """A float cube store of two variables (three features) with a few missing pixels."""
    rng = np.random.default_rng(7)
    stack = rng.random((len(NAMES), GRID.height, GRID.width), dtype=np.float32)
    stack[0, 3, 5] = np.nan  # a missing first feature: no-data there, left out of the means
    stack[:, 20:23, 0] = np.nan  # missing pixels on the grid's edge
    path = str(tmp_path_factory.mktemp("cube") / "cube.zarr")
    group = zarr.open_group(path, mode="w", zarr_format=3)
    for name, part in (("s2_ndvi", stack[:2]), ("s2_red", stack[2:])):
        array = group.create_array(
            name,
            shape=part.shape,
            chunks=(part.shape[0], CHUNK, CHUNK),
            dtype="float32",
            fill_value=np.float32(np.nan),
        )
        array[:] = part
    return path, stack


def test_the_chunked_map_of_a_halo_learner_equals_the_whole_image(
    cube: tuple[str, np.ndarray], tmp_path: Path
) -> None:
    cube_path, stack = cube
    config = ModelConfig(kind=KIND)
    check_model_spec(config, "classification", NAMES)
    table = stack.reshape(len(NAMES), -1).T[:50]
    model, contract = train_model(config, table, np.array([1, 2] * 25), NAMES, seed=0)
    folder = tmp_path / "model"
    save_model(model, contract, folder)
    _loaded, reloaded = load_model(folder)
    assert reloaded.kind == KIND and learner_for(KIND).halo(reloaded) == 1

    encoding = MapEncoding.for_classes(contract.classes, probabilities=True)
    store = tmp_path / "map.zarr"
    create_map_store(str(store), GRID, CHUNK, encoding)
    for window in GRID.chunks(CHUNK):
        predict_chunk(PredictTask(cube_path, VARIABLES, str(folder), str(store), window, encoding))
    group = zarr.open_group(str(store), mode="r")

    # The same filter on the whole image, NaN around it.
    whole = np.pad(stack, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    p = np.clip(mean3(whole), 0.0, 1.0)
    valid = np.isfinite(stack).all(axis=0)
    labels = np.where(valid, np.where(p > 0.5, 2, 1), encoding.nodata)
    # argmax takes the first class on a tie (p == 0.5): class 1, as the learner's map does.
    confidence = np.where(valid, np.round(np.maximum(p, 1 - p) * 100), 255)
    np.testing.assert_array_equal(np.asarray(group[LABEL_VARIABLE][:]), labels)
    np.testing.assert_array_equal(np.asarray(group[CONFIDENCE_VARIABLE][:]), confidence)
    np.testing.assert_array_equal(
        np.asarray(group[probability_variable(2)][:]), np.where(valid, np.round(p * 100), 255)
    )
    # Without the halo, a chunk's border pixels would differ: the comparison above can fail.
    alone = np.pad(stack[:, :CHUNK, :CHUNK], ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    assert not np.array_equal(np.clip(mean3(alone), 0.0, 1.0)[-1], p[CHUNK - 1, :CHUNK])


def test_read_block_grows_the_window_and_pads_off_the_grid(cube: tuple[str, np.ndarray]) -> None:
    cube_path, stack = cube
    corner = read_block(cube_path, VARIABLES, Window(0, 40, 16, 5), 2)  # top right corner
    assert corner.shape == (3, 20, 9)
    assert np.isnan(corner[:, :2]).all() and np.isnan(corner[:, :, -2:]).all()
    np.testing.assert_array_equal(corner[:, 2:, :-2], stack[:, 0:18, 38:45])
    inside = read_block(cube_path, VARIABLES, Window(16, 16, 16, 16), 0)
    np.testing.assert_array_equal(inside, stack[:, 16:32, 16:32])


def test_the_registry_names_the_key_of_an_unknown_kind() -> None:
    with pytest.raises(ModelError, match="no learner of kind 'patchy'") as err:
        learner_for("patchy")
    assert err.value.field == "model.kind"
    with pytest.raises(ValueError, match="already registered"):
        register_learner(MeanFilterLearner())
