"""``pixel_rows``: a block's valid pixels as a C-contiguous table, the values numpy gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.learn.rows import pixel_rows


def _numpy_rows(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = np.ascontiguousarray(block).reshape(block.shape[0], -1)
    valid = ~np.isnan(flat).any(axis=0)
    return valid, np.ascontiguousarray(flat.T[valid])


@settings(max_examples=60, deadline=None)
@given(
    features=st.integers(1, 9),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    halo=st.integers(0, 2),
    nan_fraction=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_the_rows_are_numpys_valid_rows(
    features: int,
    height: int,
    width: int,
    halo: int,
    nan_fraction: float,
    dtype: type,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    block = rng.normal(size=(features, height + 2 * halo, width + 2 * halo)).astype(dtype)
    block[rng.random(block.shape) < nan_fraction] = np.nan
    core = block[:, halo : halo + height, halo : halo + width]  # strided when halo > 0
    valid, rows = pixel_rows(core)
    expected_valid, expected_rows = _numpy_rows(core)
    np.testing.assert_array_equal(valid, expected_valid)
    assert rows.dtype == dtype and rows.flags.c_contiguous
    assert rows.shape == (int(expected_valid.sum()), features)
    np.testing.assert_array_equal(rows, expected_rows)


def test_infinite_values_stay_and_the_buffer_is_reused() -> None:
    """Only NaN marks a missing feature (as before); a thread's next call reuses the buffer."""
    block = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    block[0, 1, 1] = np.inf
    block[1, 2, 3] = np.nan
    valid, rows = pixel_rows(block)
    assert valid.sum() == 11 and np.isinf(rows).sum() == 1
    smaller = np.ones((2, 2, 2), dtype=np.float32)
    _, again = pixel_rows(smaller)
    assert np.shares_memory(rows, again)
    np.testing.assert_array_equal(again, np.ones((4, 2), dtype=np.float32))
