"""Final map files: the map stores' variables as Cloud-Optimized GeoTIFFs with overviews.

One grid converts as it is; the tiles of a tiled run are mosaicked onto one grid
(``pipeline.grid.mosaic_grid``). Both stream block by block, so a map larger than memory
converts the same way. Tiles own disjoint pixels (their cubes are no-data elsewhere), so in a
mosaic block at most one tile has data for a pixel: the first tile with data wins, which only
matters where a resampled tile of another CRS meets its neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReader
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window as RioWindow

from pipeline.errors import InputDataError
from pipeline.grid import aligned_offset
from pipeline.model import GridSpec, Window
from pipeline.storage import atomic_path

Filler = Callable[[Window], np.ndarray]


def open_map(path: str | Path, what: str = "map") -> DatasetReader:
    """Open a map file (COG, GeoTIFF) to read, or an InputDataError that names it."""
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputDataError(
            f"cannot open the {what} {str(path)!r} ({exc})",
            fix="check that the map was written (the mosaic stage) and the path is right",
        ) from None


def _array(store: str, variable: str) -> zarr.Array:
    array = zarr.open_group(store, mode="r")[variable]
    assert isinstance(array, zarr.Array)
    return array


def write_cog(
    destination: Path,
    grid: GridSpec,
    dtype: np.dtype | str,
    fill: Filler,
    windows: Iterable[Window],
    *,
    nodata: float,
    overview_resampling: str,
    describe: Callable[[Any], None] | None = None,
) -> Path:
    """The one COG writer of the maps: ``fill(window)`` for each of ``windows`` (they cover
    ``grid``) into a COG at ``destination``, written atomically, with overviews. ``describe``
    is given the open staging GeoTIFF (a rasterio dataset) to set band metadata (description,
    unit, colour table: ``pipeline.postprocess.legend.apply_band_info``) that the COG copy keeps.
    GDAL's own ``.aux.xml`` of the staging and copied files is removed: a caller that keeps
    metadata GDAL stores only there (category names) writes the sidecar itself."""
    dtype = np.dtype(dtype)
    with atomic_path(destination) as tmp:
        staging = tmp.with_name(tmp.name + ".gtiff")
        profile = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": 1,
            "dtype": dtype.name,
            "crs": grid.crs,
            "transform": grid.affine,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        try:
            with rasterio.open(staging, "w", **profile) as dst:
                for window in windows:
                    data = fill(window)
                    dst.write(
                        data,
                        1,
                        window=RioWindow(
                            window.col_off, window.row_off, window.width, window.height
                        ),
                    )
                if describe is not None:
                    describe(dst)
            rasterio.shutil.copy(
                staging,
                tmp,
                driver="COG",
                compress="DEFLATE",
                predictor="2" if dtype.kind in "iu" else "3",
                blocksize=256,
                overview_resampling=overview_resampling,
                overviews="AUTO",
                sparse_ok=False,
            )
        finally:
            staging.unlink(missing_ok=True)
            Path(f"{staging}.aux.xml").unlink(missing_ok=True)
            Path(f"{tmp}.aux.xml").unlink(missing_ok=True)
    return destination


def _intersection(a: Window, b: Window) -> Window | None:
    row0, col0 = max(a.row_off, b.row_off), max(a.col_off, b.col_off)
    row1 = min(a.row_off + a.height, b.row_off + b.height)
    col1 = min(a.col_off + a.width, b.col_off + b.width)
    if row1 <= row0 or col1 <= col0:
        return None
    return Window(row0, col0, row1 - row0, col1 - col0)


def _resampled(
    array: zarr.Array, source: GridSpec, target: GridSpec, nodata: float, dtype: np.dtype
) -> np.ndarray:
    """``array`` (on ``source``) resampled by nearest neighbour onto ``target`` (a block)."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(target.crs, source.crs, *target.bounds)
    xres, yres = source.resolution
    sx, sy = source.transform[2], source.transform[5]
    col0 = max(0, int(np.floor((left - sx) / xres)) - 1)
    col1 = min(source.width, int(np.ceil((right - sx) / xres)) + 1)
    row0 = max(0, int(np.floor((sy - top) / yres)) - 1)
    row1 = min(source.height, int(np.ceil((sy - bottom) / yres)) + 1)
    out = np.full(target.shape, nodata, dtype=dtype)
    if row1 <= row0 or col1 <= col0:
        return out
    part = Window(row0, col0, row1 - row0, col1 - col0)
    rows, cols = part.slices
    reproject(
        np.asarray(array[rows, cols]),
        out,
        src_transform=source.window_grid(part).affine,
        src_crs=source.crs,
        src_nodata=nodata,
        dst_transform=target.affine,
        dst_crs=target.crs,
        dst_nodata=nodata,
        resampling=Resampling.nearest,
    )
    return out


def tiles_to_cog(
    sources: Sequence[tuple[str, GridSpec]],
    variable: str,
    grid: GridSpec,
    destination: Path,
    *,
    nodata: float,
    overview_resampling: str,
    block: int = 512,
) -> Path:
    """Mosaic ``variable`` of each tile's map store (``(store, tile grid)``, in tile order)
    onto ``grid`` as one COG. Tiles on ``grid``'s lattice are copied; others are resampled
    (nearest neighbour) block by block. A single tile that is the grid (a single-grid run) is
    read straight through."""
    arrays = [(_array(store, variable), tile) for store, tile in sources]
    dtype = np.dtype(arrays[0][0].dtype)
    offsets = [aligned_offset(grid, tile) for _, tile in arrays]

    def fill(window: Window) -> np.ndarray:
        if len(arrays) == 1 and arrays[0][1] == grid:
            rows, cols = window.slices
            return np.asarray(arrays[0][0][rows, cols])
        out = np.full((window.height, window.width), nodata, dtype=dtype)
        for (array, tile), offset in zip(arrays, offsets, strict=True):
            if offset is None:
                part = _resampled(array, tile, grid.window_grid(window), nodata, dtype)
            else:
                row, col = offset
                inside = _intersection(window, Window(row, col, tile.height, tile.width))
                if inside is None:
                    continue
                part = np.full_like(out, nodata)
                rows, cols = inside.slices
                data = np.asarray(array[rows.start - row : rows.stop - row,
                                        cols.start - col : cols.stop - col])  # fmt: skip
                part[
                    rows.start - window.row_off : rows.stop - window.row_off,
                    cols.start - window.col_off : cols.stop - window.col_off,
                ] = data
            free = np.isnan(out) if np.isnan(nodata) else out == nodata
            out[free] = part[free]
        return out

    return write_cog(
        destination,
        grid,
        dtype,
        fill,
        grid.chunks(block),
        nodata=nodata,
        overview_resampling=overview_resampling,
    )
