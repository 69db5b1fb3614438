"""Seamless inference of a patch model: a map predicted chunk by chunk (each chunk read with the
learner's halo, overlapping patches blended with a smooth window) equals the whole image
predicted at once with the same blending, and shows no seam at chunk borders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from pipeline.learn import learner_for, load_model, save_model, train_model
from pipeline.learn.patch.blend import blend_block, lattice_halo, patch_starts, window_weights
from pipeline.predict.blockwise import (
    CONFIDENCE_VARIABLE,
    LABEL_VARIABLE,
    MapEncoding,
    PredictTask,
    create_map_store,
    predict_chunk,
    read_block,
)
from tests.patch.helpers import (
    NAMES,
    VARIABLES,
    grid,
    one_thread,
    patch_model,
    toy_patches,
    write_cube,
)

CHUNK, HEIGHT, WIDTH = 16, 45, 37  # partial chunks on the last row and column


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("patch")
    rng = np.random.default_rng(5)
    stack = rng.random((len(NAMES), HEIGHT, WIDTH), dtype=np.float32)
    stack[:3, 10:30, 5:25] += 2.0  # a field of another class across chunk borders
    stack[:, 7, 9] = np.nan  # a pixel never valid: no-data, its neighbours still mapped
    cube = str(folder / "cube.zarr")
    write_cube(cube, stack, CHUNK)
    x, y, g = toy_patches()
    with one_thread():
        model, contract = train_model(patch_model(epochs=2), x, y, NAMES, seed=0, groups=g)
    save_model(model, contract, folder / "model")
    loaded, contract = load_model(folder / "model", device="cpu")
    return {
        "cube": cube,
        "stack": stack,
        "folder": folder / "model",
        "model": loaded,
        "contract": contract,
    }


def _chunked(trained: dict[str, Any]) -> np.ndarray:
    learner = learner_for("torch_patch")
    halo = learner.halo(trained["contract"])
    out = np.full((3, HEIGHT, WIDTH), np.nan, np.float32)
    with one_thread():
        for window in grid(HEIGHT, WIDTH).chunks(CHUNK):
            block = read_block(trained["cube"], VARIABLES, window, halo)
            found = learner.predict_block(trained["model"], block, halo, "classification")
            rows, cols = window.slices
            part = np.full((3, window.height, window.width), np.nan, np.float32)
            part[:, found.valid] = found.probabilities.T
            out[:, rows, cols] = part
    return out


def _whole(trained: dict[str, Any]) -> np.ndarray:
    learner = learner_for("torch_patch")
    halo = learner.halo(trained["contract"])
    padded = np.pad(trained["stack"], ((0, 0), (halo, halo), (halo, halo)), constant_values=np.nan)
    with one_thread():
        found = learner.predict_block(trained["model"], padded, halo, "classification")
    out = np.full((3, HEIGHT, WIDTH), np.nan, np.float32)
    out[:, found.valid] = found.probabilities.T
    return out


def test_the_chunked_map_equals_the_whole_image(trained: dict[str, Any], tmp_path: Path) -> None:
    chunked, whole = _chunked(trained), _whole(trained)
    assert np.isnan(chunked[:, 7, 9]).all() and np.isnan(whole[:, 7, 9]).all()
    assert np.isfinite(whole).sum() == 3 * (HEIGHT * WIDTH - 1)
    np.testing.assert_allclose(chunked, whole, atol=1e-5, equal_nan=True)

    # Through the chain's own prediction task and map store: the labels of the whole image.
    encoding = MapEncoding.for_classes(trained["contract"].classes)
    store = str(tmp_path / "map.zarr")
    create_map_store(store, grid(HEIGHT, WIDTH), CHUNK, encoding)
    with one_thread():
        for window in grid(HEIGHT, WIDTH).chunks(CHUNK):
            predict_chunk(
                PredictTask(
                    trained["cube"], VARIABLES, str(trained["folder"]), store, window, encoding
                )
            )
    group = zarr.open_group(store, mode="r")
    labels = np.asarray(group[LABEL_VARIABLE][:])
    classes = np.asarray(trained["contract"].classes)
    expected = np.where(
        np.isfinite(whole[0]), classes[np.nan_to_num(whole).argmax(axis=0)], encoding.nodata
    )
    decided = np.sort(np.nan_to_num(whole), axis=0)
    clear = (decided[-1] - decided[-2]) > 1e-4  # not a near tie, which rounding may flip
    np.testing.assert_array_equal(labels[clear], expected[clear])
    assert np.asarray(group[CONFIDENCE_VARIABLE][7, 9]) == 255


def _step_differences(p: np.ndarray, axis: int) -> np.ndarray:
    """Mean absolute change of the class probabilities between neighbouring rows (axis 1) or
    columns (axis 2), per row or column border."""
    change = np.abs(np.diff(p, axis=axis))
    other = 2 if axis == 1 else 1
    return np.nanmean(change, axis=(0, other))


def test_no_seam_at_chunk_borders(trained: dict[str, Any]) -> None:
    p = _chunked(trained)
    for axis, length in ((1, HEIGHT), (2, WIDTH)):
        steps = _step_differences(p, axis)
        borders = [b - 1 for b in range(CHUNK, length, CHUNK)]  # step from b - 1 to b
        inside = [i for i in range(length - 1) if i not in borders]
        assert steps[borders].max() <= steps[inside].max()
    # Without the halo, each chunk alone: its patches see no context past the chunk, and the
    # map differs from the whole image (the check above is not vacuous).
    learner = learner_for("torch_patch")
    window = grid(HEIGHT, WIDTH).chunks(CHUNK)[0]
    alone = read_block(trained["cube"], VARIABLES, window, 0)
    with one_thread():
        found = learner.predict_block(trained["model"], alone, 0, "classification")
    whole = _whole(trained)[:, :CHUNK, :CHUNK]
    assert np.abs(found.probabilities.T - whole[:, found.valid]).max() > 1e-3


def test_the_lattice_covers_the_core_and_weights_are_smooth() -> None:
    size, stride = 16, 8
    halo = lattice_halo(size, stride)
    assert halo == 8 and lattice_halo(16, 16) == 0 and lattice_halo(12, 5) == 10
    starts = patch_starts(32 + 2 * halo, halo, size, stride)
    assert starts[0] == 0 and all(s + size > halo for s in starts)
    w = window_weights(size)
    assert (w > 0).all() and w.argmax() in (7 * 16 + 7, 7 * 16 + 8, 8 * 16 + 7, 8 * 16 + 8)
    # A constant predictor blends to the same constant everywhere (weights are normalised).
    block = np.zeros((2, 20 + 2 * halo, 13 + 2 * halo), np.float32)
    out = blend_block(block, halo, size, stride, lambda x: np.ones((len(x), 3, size, size)), 3)
    np.testing.assert_allclose(out, 1.0)
