"""Bayesian smoothing: the sits formula by hand, a plain numpy reference, and chunked or tiled
processing equal to the whole map bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ManifestError
from pipeline.model import GridSpec, Window
from pipeline.postprocess.blocks import Placed, array_reader, mosaic_reader
from pipeline.postprocess.smooth import (
    SmoothingConfig,
    labels_and_confidence,
    logits,
    percent_to_probability,
    smooth,
    smooth_window,
)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_one_pixel_by_hand() -> None:
    # two classes, so logit(p) = ln(p / (1 - p)); class 0's logits on a 3 x 3 grid:
    x = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])
    p0 = 1 / (1 + np.exp(-x))
    probabilities = np.stack([p0, 1 - p0])
    config = SmoothingConfig(window_size=3, neigh_fraction=1.0, smoothness=(2.0,))
    out = smooth(probabilities, config)
    # centre pixel: the whole grid is its window; mean 2, sample variance 12 / 8 = 1.5;
    # w = 1.5 / (1.5 + 2) = 3 / 7; x' = 3/7 * 2 + 4/7 * 2 = 2
    assert out[0, 1, 1] == pytest.approx(_sigmoid(2.0), abs=1e-6)
    # top-left pixel: mirrored window rows (0, 0, 1) x cols (0, 0, 1):
    # values 0 0 1 / 0 0 1 / 1 1 2 -> mean 6/9, variance (sum x^2 - 9 m^2) / 8
    values = np.array([0, 0, 1, 0, 0, 1, 1, 1, 2], dtype=float)
    m, v = values.mean(), values.var(ddof=1)
    w = v / (v + 2.0)
    assert out[0, 0, 0] == pytest.approx(_sigmoid(w * 0.0 + (1 - w) * m), abs=1e-6)
    # neigh_fraction 0.5 at the centre: the ceil(4.5) = 5 highest of 0 1 2 1 2 3 2 3 4
    # are 4 3 3 2 2: mean 2.8, variance 0.7; x' = w * 2 + (1 - w) * 2.8
    half = smooth(probabilities, SmoothingConfig(3, 0.5, (2.0,)))
    w = 0.7 / (0.7 + 2.0)
    assert half[0, 1, 1] == pytest.approx(_sigmoid(w * 2.0 + (1 - w) * 2.8), abs=1e-6)


def _reference(probabilities: np.ndarray, config: SmoothingConfig) -> np.ndarray:
    """A plain numpy transcription of sits' bayes_smoother_fraction (full sort)."""
    x = logits(probabilities)
    h = config.halo
    padded = np.pad(x, [(0, 0), (h, h), (h, h)], mode="symmetric")
    k_n, rows, cols = x.shape
    tau = config.smoothness_of(k_n)
    out = np.full(x.shape, np.nan)
    for k in range(k_n):
        for i in range(rows):
            for j in range(cols):
                if np.isnan(x[k, i, j]):
                    continue
                window = padded[k, i : i + config.window_size, j : j + config.window_size]
                values = np.sort(window[~np.isnan(window)])[::-1]
                kept = values[: math.ceil(config.neigh_fraction * values.size)]
                m = kept.mean()
                v = kept.var(ddof=1) if kept.size > 1 else 0.0
                w = v / (v + tau[k])
                out[k, i, j] = w * x[k, i, j] + (1 - w) * m
    return 1 / (1 + np.exp(-out))


def _random_probabilities(seed: int, k: int, rows: int, cols: int, holes: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.5), size=(rows, cols)).transpose(2, 0, 1)
    p[:, rng.random((rows, cols)) < holes] = np.nan
    return p


def test_the_kernel_equals_a_plain_transcription_of_sits() -> None:
    p = _random_probabilities(1, 3, 11, 13, 0.1)
    for config in (SmoothingConfig(5, 0.5, (10.0,)), SmoothingConfig(3, 1.0, (1.0, 5.0, 20.0))):
        np.testing.assert_allclose(smooth(p, config), _reference(p, config), rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(2, 4),
    rows=st.integers(1, 23),
    cols=st.integers(1, 23),
    chunk=st.integers(1, 9),
    window=st.sampled_from([3, 5, 7]),
    fraction=st.sampled_from([0.3, 0.5, 1.0]),
    holes=st.sampled_from([0.0, 0.2]),
)
def test_chunked_equals_whole(
    seed: int,
    k: int,
    rows: int,
    cols: int,
    chunk: int,
    window: int,
    fraction: float,
    holes: float,
) -> None:
    p = _random_probabilities(seed, k, rows, cols, holes)
    config = SmoothingConfig(window, fraction, (7.0,))
    whole = smooth(p, config)
    grid = GridSpec("EPSG:3857", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), cols, rows)
    chunked = np.full_like(whole, -1)
    read = array_reader(p)
    for w in grid.chunks(chunk):
        chunked[:, w.slices[0], w.slices[1]] = smooth_window(read, (rows, cols), w, config)
    np.testing.assert_array_equal(chunked, whole)


def test_two_tiles_of_a_mosaic_equal_the_whole_map() -> None:
    p = _random_probabilities(7, 3, 30, 41, 0.05)
    config = SmoothingConfig()
    whole = smooth(p, config)
    # two tiles meeting at column 17, their chunks smoothed with halos read across the seam
    tiles = [Placed(p[:, :, :17], 0, 0), Placed(p[:, :, 17:], 0, 17)]
    read = mosaic_reader(tiles, np.nan, np.float64)
    out = np.empty_like(whole)
    for tile_window in (Window(0, 0, 30, 17), Window(0, 17, 30, 24)):
        for r in range(0, 30, 8):
            for c in range(tile_window.col_off, tile_window.col_off + tile_window.width, 8):
                w = Window(
                    r, c, min(8, 30 - r), min(8, tile_window.col_off + tile_window.width - c)
                )
                out[:, w.slices[0], w.slices[1]] = smooth_window(read, (30, 41), w, config)
    np.testing.assert_array_equal(out, whole)


def test_no_data_stays_no_data_and_labels_follow_the_smoothed_probabilities() -> None:
    p = _random_probabilities(3, 3, 9, 9, 0.0)
    p[:, 4, 4] = np.nan
    out = smooth(p, SmoothingConfig(3, 1.0, (10.0,)))
    assert np.isnan(out[:, 4, 4]).all() and not np.isnan(out[:, 4, 3]).any()
    labels, confidence = labels_and_confidence(out, (10, 20, 30), nodata=0)
    assert labels[4, 4] == 0 and confidence[4, 4] == 255
    best = np.nanargmax(np.where(np.isnan(out), -1, out), axis=0)
    np.testing.assert_array_equal(
        labels[out[0] == out[0]], np.array([10, 20, 30])[best][out[0] == out[0]]
    )
    assert confidence[0, 0] == round(float(out[:, 0, 0].max()) * 100)
    # an exact tie goes to the first code
    tie = np.full((2, 1, 1), 0.5, dtype=np.float32)
    assert labels_and_confidence(tie, (5, 3), nodata=0)[0][0, 0] == 5


def test_percent_layers_become_probabilities() -> None:
    stack = np.array([[[10, 255]], [[90, 0]]], dtype=np.uint8)
    p = percent_to_probability(stack)
    assert p[0, 0, 0] == pytest.approx(0.1) and np.isnan(p[:, 0, 1]).all()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window_size": 4}, "window_size"),
        ({"neigh_fraction": 0.0}, "neigh_fraction"),
        ({"smoothness": (0.0,)}, "smoothness"),
    ],
)
def test_bad_settings_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ManifestError) as error:
        SmoothingConfig(**kwargs)  # type: ignore[arg-type]
    assert error.value.field == f"postprocess.smoothing.{field}"
    with pytest.raises(ManifestError, match="one per class"):
        SmoothingConfig(smoothness=(1.0, 2.0)).smoothness_of(3)
