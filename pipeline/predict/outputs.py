"""Final map files: the map store's variables as Cloud-Optimized GeoTIFFs with overviews.

The copy streams window by window, so a map larger than memory converts the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from rasterio.windows import Window as RioWindow

from pipeline.model import GridSpec
from pipeline.storage import atomic_path


def zarr_to_cog(
    store: str,
    variable: str,
    grid: GridSpec,
    destination: Path,
    *,
    nodata: float,
    overview_resampling: str,
    block: int = 512,
) -> Path:
    """Write ``variable`` of ``store`` as a COG at ``destination`` (atomically)."""
    array = zarr.open_group(store, mode="r")[variable]
    assert isinstance(array, zarr.Array)
    dtype = np.dtype(array.dtype)
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
                for row in range(0, grid.height, block):
                    for col in range(0, grid.width, block):
                        h = min(block, grid.height - row)
                        w = min(block, grid.width - col)
                        data = np.asarray(array[row : row + h, col : col + w])
                        dst.write(data, 1, window=RioWindow(col, row, w, h))
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
    return destination
