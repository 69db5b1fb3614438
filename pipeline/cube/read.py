"""Pixel I/O behind a protocol: read one band of one file onto a target grid.

Everything else in the cube stage is pure numpy; only a Reader touches files. ``RasterioReader``
reads a window directly when the file's grid is aligned with the target grid, and warps through a
WarpedVRT otherwise (reprojection, resampling of 20 m bands to 10 m...).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow

from pipeline.errors import CatalogError
from pipeline.model import GridSpec


class Reader(Protocol):
    """Reads one band of a raster onto ``grid`` as float32, NaN where there is no data.

    No data means: outside the file, the file's no-data value, or ``nodata`` when given (it
    overrides the file's). Integer quality layers come back as exact floats (< 2**24).
    """

    def read(
        self,
        href: str,
        band_index: int,
        grid: GridSpec,
        *,
        resampling: str = "nearest",
        nodata: float | None = None,
    ) -> np.ndarray: ...


def _aligned_offset(src_transform: tuple[float, ...], grid: GridSpec) -> tuple[int, int] | None:
    """Row/column offset of ``grid`` inside the source grid when both share pixel size and phase."""
    a, b, c, d, e, f = src_transform[:6]
    ga, gb, gc, gd, ge, gf = grid.transform
    if b or d or gb or gd:
        return None
    if not (math.isclose(a, ga, rel_tol=1e-9) and math.isclose(e, ge, rel_tol=1e-9)):
        return None
    col = (gc - c) / a
    row = (gf - f) / e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col)


def _to_float(data: np.ma.MaskedArray, nodata: float | None) -> np.ndarray:
    out = np.ma.getdata(data).astype(np.float32)
    missing = np.ma.getmaskarray(data)
    if nodata is not None:
        missing = missing | (np.ma.getdata(data) == nodata)
    out[missing] = np.nan
    return out


class RasterioReader:
    """The production reader: GDAL through rasterio (local files, /vsis3/, /vsicurl/)."""

    def read(
        self,
        href: str,
        band_index: int,
        grid: GridSpec,
        *,
        resampling: str = "nearest",
        nodata: float | None = None,
    ) -> np.ndarray:
        try:
            with rasterio.open(href) as src:
                if band_index > src.count:
                    raise CatalogError(
                        f"{href!r} has {src.count} band(s); band {band_index} was asked for",
                        fix="check the asset's band index",
                    )
                src_nodata = nodata if nodata is not None else src.nodata
                same_crs = src.crs is not None and src.crs == rasterio.crs.CRS.from_user_input(
                    grid.crs
                )
                offset = _aligned_offset(tuple(src.transform), grid) if same_crs else None
                if offset is not None:
                    # Fast path: same grid, so a plain window read, no resampling.
                    row, col = offset
                    window = RioWindow(col, row, grid.width, grid.height)
                    data = src.read(band_index, window=window, boundless=True, masked=True)
                    return _to_float(data, src_nodata)
                with WarpedVRT(
                    src,
                    crs=grid.crs,
                    transform=grid.affine,
                    width=grid.width,
                    height=grid.height,
                    resampling=Resampling[resampling],
                    src_nodata=src_nodata,
                ) as vrt:
                    return _to_float(vrt.read(band_index, masked=True), src_nodata)
        except RasterioIOError as exc:
            raise CatalogError(
                f"cannot read {href!r}: {exc}",
                fix="check that the asset exists and is a readable GeoTIFF/COG (a corrupt or "
                "missing file must be replaced or its item removed from the catalog)",
            ) from None
