"""The reader puts every source pixel where it belongs: a one-pixel shift is caught.

The synthetic bands hold a value unique to each pixel, so the cube's pixel (r, c) can be compared
with the source pixel (r, c) computed independently; the same comparison is shown to fail for a
grid moved by one pixel (the silent stackstac trap of docs/cube.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from pipeline.cube.build import compute_window
from pipeline.cube.plan import plan_cube
from pipeline.cube.read import RasterioReader
from pipeline.cube.store import create_cube_store, write_region
from pipeline.model import GridSpec, Window
from tests.cube.synthetic import EPSG, LEFT, TOP, band_values, make_series, write_cog


def _shifted(grid: GridSpec, rows: int, cols: int) -> GridSpec:
    a, b, c, d, e, f = grid.transform
    return GridSpec(grid.crs, (a, b, c + cols * a, d, e, f + rows * e), grid.width, grid.height)


def test_reader_puts_each_pixel_in_place_and_a_one_pixel_shift_is_caught(tmp_path: Path) -> None:
    series = make_series(tmp_path, size=64, n_dates=1)
    reader = RasterioReader()
    href = series.acquisitions[0].assets["red"].href
    window = Window(5, 9, 40, 30)
    grid = series.grid.window_grid(window)
    rows, cols = np.mgrid[5:45, 9:39]
    truth = band_values(0, 2, rows, cols).astype(np.float32)
    np.testing.assert_array_equal(reader.read(href, 1, grid), truth)
    for dr, dc in ((0, 1), (1, 0), (-1, 0), (0, -1)):
        moved = reader.read(href, 1, _shifted(grid, dr, dc))
        assert not np.array_equal(moved, truth), f"a shift of ({dr}, {dc}) px went unnoticed"
        # ... and it is exactly the neighbouring pixels: the grid arithmetic is exact.
        np.testing.assert_array_equal(moved, band_values(0, 2, rows + dr, cols + dc))


def test_cube_pixels_match_the_source_after_the_store_round_trip(tmp_path: Path) -> None:
    """Grid -> reader -> Zarr -> xarray/rioxarray: the CRS, the transform and every value agree;
    a cube one pixel off would fail the value check at the marked pixel."""
    series = make_series(tmp_path / "data", size=64, n_dates=3, date_step_days=17)
    start = series.acquisitions[0].datetime.date()
    end = series.acquisitions[-1].datetime.date()
    plan = plan_cube(series.grid, [(series.profile, series.acquisitions)], start, end, [], 32)
    store = str(tmp_path / "cube.zarr")
    create_cube_store(plan, store)
    for window in plan.windows:
        write_region(store, window, compute_window(plan, window).stored)
    cube = xr.open_zarr(store)
    assert cube.rio.crs.to_string() == EPSG
    assert tuple(cube.rio.transform())[:6] == series.grid.transform
    # x/y coordinates are pixel centres
    assert float(cube.x[0]) == LEFT + 5.0 and float(cube.y[0]) == TOP - 5.0
    # On the first date of the grid (an acquisition date) a clear pixel holds its own value.
    valid = ~np.isin(np.repeat(np.repeat(series.raw["scl"][0], 2, 0), 2, 1), [0, 9])
    r, c = np.argwhere(valid)[len(np.argwhere(valid)) // 2]
    expected = float(band_values(0, 2, np.array(r), np.array(c))) * 1e-4
    red = cube["s2_red"].isel(s2_time=0).values
    assert red[r, c] == pytest.approx(expected, rel=1e-6)
    assert red[r, c + 1] != pytest.approx(expected, rel=1e-6)  # the neighbour differs


def _warp_reference(href: str, grid: GridSpec, resampling: str) -> np.ndarray:
    with rasterio.open(href) as src:
        return RasterioReader._read_warped(src, 1, grid, resampling, src.nodata)


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
@pytest.mark.parametrize("offset", [(0, 0), (3, 5), (-4, 7), (61, 2)])
def test_integer_factor_fast_path_equals_gdal_warper(
    tmp_path: Path, resampling: str, offset: tuple[int, int]
) -> None:
    """20 m -> 10 m: the repeat / separable bilinear fast path gives GDAL's numbers."""
    rng = np.random.default_rng(1)
    data = rng.uniform(1, 1000, (40, 50)).astype(np.float32)
    href = tmp_path / "b20.tif"
    write_cog(href, data, 20.0, nodata=None)
    grid = GridSpec(
        EPSG,
        (10.0, 0.0, LEFT + offset[1] * 10.0, 0.0, -10.0, TOP - offset[0] * 10.0),
        64,
        48,
    )
    fast = RasterioReader().read(str(href), 1, grid, resampling=resampling)
    slow = _warp_reference(str(href), grid, resampling)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast[~np.isnan(fast)], slow[~np.isnan(slow)], rtol=1e-5)


def test_reprojection_goes_through_the_warper(tmp_path: Path) -> None:
    """Another CRS: values come from GDAL's warper and the grid's footprint is respected."""
    series = make_series(tmp_path, size=64, n_dates=1)
    href = series.acquisitions[0].assets["nir"].href
    # The same area in lon/lat: every output pixel inside the source gets a source value.
    grid = GridSpec("EPSG:4326", (5e-5, 0.0, 0.4975, 0.0, -5e-5, 44.2245), 40, 40)
    out = RasterioReader().read(href, 1, grid, resampling="nearest")
    source = band_values(0, 3, *np.mgrid[0:64, 0:64])
    finite = out[~np.isnan(out)]
    assert finite.size == out.size  # the grid lies inside the source
    assert np.isin(finite, source.astype(np.float32)).all()


def test_missing_asset_is_a_clear_error(tmp_path: Path) -> None:
    from pipeline.errors import CatalogError

    grid = GridSpec(EPSG, (10.0, 0.0, LEFT, 0.0, -10.0, TOP), 8, 8)
    with pytest.raises(CatalogError, match=r"cannot read .*nope\.tif.*Fix:"):
        RasterioReader().read(str(tmp_path / "nope.tif"), 1, grid)


def test_reader_sees_a_rewritten_file(tmp_path: Path) -> None:
    """Open datasets are cached per worker, but a local file written again is read again."""
    href = tmp_path / "b.tif"
    grid = GridSpec(EPSG, (10.0, 0.0, LEFT, 0.0, -10.0, TOP), 8, 8)
    write_cog(href, np.full((8, 8), 5, dtype=np.uint16), 10.0)
    reader = RasterioReader()
    assert reader.read(str(href), 1, grid)[0, 0] == 5
    write_cog(href, np.full((8, 8), 7, dtype=np.uint16), 10.0)
    assert reader.read(str(href), 1, grid)[0, 0] == 7
