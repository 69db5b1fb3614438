"""The cube on disk: a Zarr v3 store with CF/geospatial metadata, written chunk by chunk.

``create_cube_store`` writes the metadata and coordinates once; ``write_region`` then fills one
chunk-aligned window of every variable. A region write touches only its own Zarr chunks, so two
windows never race and writing the same window twice gives the same bytes (idempotent).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr

from pipeline.cube.plan import CubePlan
from pipeline.model import GridSpec, Window


def _spatial_coords(grid: GridSpec) -> dict[str, Any]:
    return {"y": ("y", grid.y_coords()), "x": ("x", grid.x_coords())}


def cube_template(plan: CubePlan) -> xr.Dataset:
    """A lazy dataset with the cube's variables, coordinates and CRS (no pixel computed)."""
    grid = plan.grid
    size = plan.chunk_size
    coords: dict[str, Any] = _spatial_coords(grid)
    data_vars: dict[str, Any] = {}
    for sensor in plan.sensors:
        times = pd.DatetimeIndex([pd.Timestamp(d) for d in sensor.dates])
        coords[sensor.time_dim] = (sensor.time_dim, times.values.astype("datetime64[ns]"))
        n = len(sensor.dates)
        for variable in sensor.variables:
            data_vars[variable] = (
                (sensor.time_dim, "y", "x"),
                da.full(
                    (n, grid.height, grid.width),
                    np.nan,
                    dtype=np.float32,
                    chunks=(n, size, size),
                ),
                {
                    "sensor": sensor.profile.name,
                    "long_name": variable,
                    "_FillValue": np.float32(np.nan),
                },
            )
        data_vars[sensor.valid_count_variable] = (
            ("y", "x"),
            da.zeros((grid.height, grid.width), dtype=np.uint16, chunks=(size, size)),
            {"long_name": f"number of valid {sensor.profile.name} acquisitions"},
        )
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.rio.write_crs(grid.crs)
    ds = ds.rio.write_transform(grid.affine)
    ds.attrs.update(
        {
            "title": "sitsflow gap-filled feature cube",
            "Conventions": "CF-1.8",
            "feature_names": plan.feature_names,
            "chunk_size": size,
        }
    )
    return ds


def write_template(
    template: xr.Dataset, path: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write a lazy dataset's metadata and coordinates as a Zarr v3 store; no data chunk is written.

    Each variable lists ``spatial_ref`` in its CF ``coordinates`` so that a plain
    ``xarray.open_zarr`` brings the CRS back (rioxarray's ``.rio.crs`` then works).
    """
    for name, variable in template.data_vars.items():
        if name == "spatial_ref":
            continue
        variable.encoding.update(
            {
                "chunks": variable.data.chunksize,
                "fill_value": variable.attrs.pop("_FillValue", variable.dtype.type(0)),
                "coordinates": "spatial_ref",
            }
        )
    with warnings.catch_warnings():
        # Consolidated metadata is a zarr-python extension to format 3; xarray reads it fastest.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        template.to_zarr(
            path,
            mode="w",
            compute=False,
            zarr_format=3,
            consolidated=True,
            storage_options=dict(storage_options) if storage_options else None,
        )


def create_cube_store(
    plan: CubePlan, path: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write the cube's metadata and coordinates; every data chunk is left to ``write_region``."""
    write_template(cube_template(plan), path, storage_options)


def write_region(path: str, window: Window, arrays: Mapping[str, np.ndarray]) -> None:
    """Write each variable's values for ``window`` (arrays are (time, h, w) or (h, w))."""
    group = zarr.open_group(path, mode="r+")
    rows, cols = window.slices
    for name, values in arrays.items():
        target = group[name]
        assert isinstance(target, zarr.Array)
        if values.ndim == 3:
            target[:, rows, cols] = values
        else:
            target[rows, cols] = values


def read_features(path: str, plan_variables: list[tuple[str, str]], window: Window) -> np.ndarray:
    """The feature stack of ``window``: (n_features, h, w) float32, in feature order."""
    group = zarr.open_group(path, mode="r")
    rows, cols = window.slices
    parts = []
    for name, _time_dim in plan_variables:
        array = group[name]
        assert isinstance(array, zarr.Array)
        parts.append(np.asarray(array[:, rows, cols], dtype=np.float32))
    return np.concatenate(parts, axis=0)
