"""The shared data model: grids, windows and date grids (pure, property-tested)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.model import DateGrid, GridSpec, day_number


@given(
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    size=st.integers(8, 300),
)
def test_chunks_cover_every_pixel_once(width: int, height: int, size: int) -> None:
    grid = GridSpec("EPSG:32631", (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), width, height)
    count = np.zeros((height, width), dtype=np.int32)
    for window in grid.chunks(size):
        assert 0 < window.height <= size and 0 < window.width <= size
        count[window.slices] += 1
    assert (count == 1).all()


def test_window_grid_is_the_sub_grid() -> None:
    grid = GridSpec("EPSG:32631", (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0), 100, 80)
    window = grid.chunks(32)[4]  # second row of chunks, second column
    sub = grid.window_grid(window)
    assert sub.transform[2] == 500000.0 + 10.0 * window.col_off
    assert sub.transform[5] == 4000000.0 - 10.0 * window.row_off
    assert sub.x_coords()[0] == grid.x_coords()[window.col_off]
    assert sub.y_coords()[0] == grid.y_coords()[window.row_off]


def test_from_bounds_and_bounds_round_trip() -> None:
    grid = GridSpec.from_bounds("EPSG:32631", (0.0, 0.0, 1000.0, 500.0), 10.0)
    assert (grid.width, grid.height) == (100, 50)
    assert grid.bounds == (0.0, 0.0, 1000.0, 500.0)
    partial = GridSpec.from_bounds("EPSG:32631", (0.0, 0.0, 1005.0, 500.0), 10.0)
    assert partial.width == 101  # a partial pixel is kept, never dropped


def test_date_grid() -> None:
    grid = DateGrid(date(2017, 1, 1), date(2017, 12, 31), 10)
    assert len(grid) == 37 == len(grid.dates)
    assert grid.dates[1] == date(2017, 1, 11)
    assert grid.dates[-1] == date(2017, 12, 27)
    with pytest.raises(ValueError, match="before start"):
        DateGrid(date(2017, 1, 2), date(2017, 1, 1), 10)
    assert day_number(date(1970, 1, 11)) == 10.0
