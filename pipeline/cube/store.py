"""The cube on storage: a Zarr v3 store (local path or fsspec URL such as ``s3://bucket/cube``)
with CF/geospatial metadata, written chunk by chunk.

Layout (docs/cube.md): time-series variables (``<sensor>_time``, y, x) in chunks of
(all dates, chunk_size, chunk_size), so that both extraction (a few pixels, every date) and
prediction (a window, every feature) read whole chunks; ``<sensor>_valid_count`` (y, x); in
the ``sitsflow`` subgroup (the build's own state, not the user's dataset) ``owned`` (y, x) and
``chunk_done`` (chunk row, chunk column), 1 once a window is written. Time series are
int16 codes with CF ``scale_factor`` and ``_FillValue`` (the default encoding,
``pipeline.cube.encoding``) or float32 (``CubePlan.encoding``). Values are compressed with
Blosc/LZ4 (level 1) and byte shuffle (fast enough not to dominate a build; see
docs/benchmarks.md).

``create_cube_store`` writes the metadata and coordinates once; ``write_region`` then fills one
chunk-aligned window of every variable. A region write touches only its own Zarr chunks, so two
windows never race and writing the same window twice gives the same bytes (idempotent); the
``chunk_done`` flag is written last, so a restart can skip what ``finished_windows`` lists.
Credentials are never passed here: s3fs and GDAL take them from the environment.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from pipeline.cube.encoding import VariableEncoding, decode
from pipeline.cube.plan import OWNED_VARIABLE, CubePlan
from pipeline.model import GridSpec, Window

CHUNK_DONE_VARIABLE = "chunk_done"
STATE_GROUP = "sitsflow"
"""The subgroup of the build's own arrays (``owned``, ``chunk_done``)."""
STATE_VARIABLES = (OWNED_VARIABLE, CHUNK_DONE_VARIABLE)
COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")


def _spatial_coords(grid: GridSpec) -> dict[str, Any]:
    """x and y (pixel centres) with their CF attributes, as the grid mapping's CRS names them."""
    return {
        "y": ("y", grid.y_coords(), _axis_attributes(grid.crs, "y")),
        "x": ("x", grid.x_coords(), _axis_attributes(grid.crs, "x")),
    }


def _axis_attributes(crs: str, axis: str) -> dict[str, str]:
    """CF attributes of a grid axis: projected (metres...) or geographic (degrees)."""
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    if parsed.is_geographic:
        if axis == "x":
            return {"standard_name": "longitude", "long_name": "longitude", "units":
                    "degrees_east", "axis": "X"}  # fmt: skip
        return {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                "axis": "Y"}  # fmt: skip
    units = {"metre": "m", "meter": "m", "US survey foot": "us_survey_foot", "foot": "ft"}
    unit = parsed.axis_info[0].unit_name if parsed.axis_info else "metre"
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "long_name": f"{axis} coordinate of projection",
        "units": units.get(unit, unit),
        "axis": axis.upper(),
    }


def cube_template(plan: CubePlan) -> xr.Dataset:
    """A lazy dataset with the cube's variables, coordinates and CRS (no pixel computed)."""
    grid = plan.grid
    size = plan.chunk_size
    coords: dict[str, Any] = _spatial_coords(grid)
    data_vars: dict[str, Any] = {}
    encodings = plan.variable_encodings
    for sensor in plan.sensors:
        times = pd.DatetimeIndex([pd.Timestamp(d) for d in sensor.dates])
        coords[sensor.time_dim] = (sensor.time_dim, times.values.astype("datetime64[ns]"))
        n = len(sensor.dates)
        for variable, short in zip(sensor.variables, sensor.series_names, strict=True):
            data_vars[variable] = (
                (sensor.time_dim, "y", "x"),
                da.full((n, grid.height, grid.width), np.nan, dtype=np.float32,
                        chunks=(n, size, size)),
                {"sensor": sensor.profile.name, "feature": short, "long_name": variable},
                _storage(encodings[variable]),
            )  # fmt: skip
        data_vars[sensor.valid_count_variable] = (
            ("y", "x"),
            da.zeros((grid.height, grid.width), dtype=np.uint16, chunks=(size, size)),
            {"long_name": f"number of valid {sensor.profile.name} acquisitions"},
        )
    for encoder in plan.encoders:  # static float32 features (pipeline.cube.encoders)
        for i, variable in enumerate(encoder.variables):
            data_vars[variable] = (
                ("y", "x"),
                da.full((grid.height, grid.width), np.nan, dtype=np.float32,
                        chunks=(size, size)),
                {"encoder": encoder.name, "module": encoder.module, "channel": i,
                 "weights_sha256": encoder.weights_sha256, "long_name": variable},
                {"fill_value": np.float32(np.nan)},
            )  # fmt: skip
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.rio.write_crs(grid.crs)
    ds = ds.rio.write_transform(grid.affine)
    ds.attrs.update(
        {
            "title": "sitsflow gap-filled feature cube",
            "Conventions": "CF-1.8",
            "feature_names": plan.feature_names,
            "chunk_size": size,
            "tile": plan.tile.id if plan.tile is not None else "",
            "cube_encoding": plan.encoding,
        }
    )
    return ds


def state_template(plan: CubePlan) -> xr.Dataset:
    """The build's own arrays, kept in the ``STATE_GROUP`` subgroup, out of the user's dataset:
    ``owned`` (y, x) and ``chunk_done`` (chunk row, chunk column)."""
    grid, size = plan.grid, plan.chunk_size
    n_rows, n_cols = -(-grid.height // size), -(-grid.width // size)
    data_vars: dict[str, Any] = {
        OWNED_VARIABLE: (
            ("y", "x"),
            da.zeros((grid.height, grid.width), dtype=np.uint8, chunks=(size, size)),
            {"long_name": "1 where this tile owns the pixel (overlapping tiles: docs/cube.md)"},
        ),
        CHUNK_DONE_VARIABLE: (
            ("chunk_row", "chunk_col"),
            da.zeros((n_rows, n_cols), dtype=np.uint8, chunks=(1, 1)),
            {"long_name": "1 once the chunk's region write finished"},
        ),
    }
    return xr.Dataset(data_vars)


def _member(group: zarr.Group, name: str) -> zarr.Array:
    """Array ``name`` of the cube: the build's own arrays live in ``STATE_GROUP``; stores
    written before that kept them at the root, and are still read and resumed."""
    if name in STATE_VARIABLES and f"{STATE_GROUP}/{name}" in group:
        found = group[f"{STATE_GROUP}/{name}"]
    else:
        found = group[name]
    assert isinstance(found, zarr.Array)
    return found


def _storage(encoding: VariableEncoding | None) -> dict[str, Any]:
    """The xarray encoding of a time series: int16 codes with CF scale_factor and _FillValue
    (the Zarr fill value too: a chunk never written reads as NaN), or float32 with NaN."""
    if encoding is None:
        return {"fill_value": np.float32(np.nan)}
    return {
        "dtype": encoding.dtype,
        "scale_factor": encoding.step,
        "_FillValue": np.int16(encoding.fill_value),
        "fill_value": np.int16(encoding.fill_value),
    }


def write_template(
    template: xr.Dataset,
    path: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    group: str | None = None,
) -> None:
    """Write a lazy dataset's metadata and coordinates as a Zarr v3 store; no data chunk is written.

    Each variable lists ``spatial_ref`` in its CF ``coordinates`` so that a plain
    ``xarray.open_zarr`` brings the CRS back (rioxarray's ``.rio.crs`` then works). The Zarr
    fill value is the variable's ``_FillValue`` attribute, or its encoding's ``fill_value``
    (kept as given), else 0.
    """
    for name, variable in template.data_vars.items():
        if name == "spatial_ref":
            continue
        fill = variable.attrs.pop("_FillValue", variable.dtype.type(0))
        variable.encoding.setdefault("fill_value", fill)
        variable.encoding.update(
            {
                "chunks": variable.data.chunksize,
                "coordinates": "spatial_ref",
                "compressors": [COMPRESSOR],
            }
        )
    with warnings.catch_warnings():
        # Consolidated metadata is a zarr-python extension to format 3; xarray reads it fastest.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        template.to_zarr(
            path,
            group=group,
            mode="w",
            compute=False,
            zarr_format=3,
            consolidated=group is None,
            storage_options=dict(storage_options) if storage_options else None,
        )


def create_cube_store(
    plan: CubePlan, path: str, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write the cube's metadata and coordinates; every data chunk is left to ``write_region``.
    The build's own arrays go to the ``STATE_GROUP`` subgroup: ``xarray.open_zarr(path)`` shows
    the user's variables only."""
    write_template(cube_template(plan), path, storage_options)
    write_template(state_template(plan), path, storage_options, group=STATE_GROUP)
    # The root's consolidated metadata lists the subgroup too (region writes look it up there).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(_open(path, "r+", storage_options).store)


def _open(path: str, mode: str, storage_options: Mapping[str, Any] | None) -> zarr.Group:
    options = dict(storage_options) if storage_options and "://" in path else None
    return zarr.open_group(path, mode=mode, storage_options=options)  # type: ignore[arg-type]


def write_region(
    path: str,
    window: Window,
    arrays: Mapping[str, np.ndarray],
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write each variable's values for ``window`` (arrays are (time, h, w) or (h, w))."""
    group = _open(path, "r+", storage_options)
    rows, cols = window.slices
    for name, values in arrays.items():
        target = _member(group, name)
        if target.dtype == np.int16 and values.dtype != np.int16:
            raise ValueError(
                f"{name} is stored as int16 codes but got {values.dtype} values; write the "
                "codes (WindowResult.stored, or pipeline.cube.encoding.encode)"
            )
        # Every chunk is stored, even one that is all fill value: zarr would otherwise compare
        # each chunk with the fill value first (NaN-aware array_equal: several passes and
        # temporaries the size of the chunk, 10 % of a cube chunk's CPU).
        target = target.with_config({"write_empty_chunks": True})
        if values.ndim == 3:
            target[:, rows, cols] = values
        else:
            target[rows, cols] = values


def mark_chunk_done(
    path: str, chunk_size: int, window: Window, storage_options: Mapping[str, Any] | None = None
) -> None:
    group = _open(path, "r+", storage_options)
    done = _member(group, CHUNK_DONE_VARIABLE)
    done[window.row_off // chunk_size, window.col_off // chunk_size] = 1


def finished_windows(
    path: str,
    chunk_size: int,
    windows: Iterable[Window],
    storage_options: Mapping[str, Any] | None = None,
) -> set[Window]:
    """The windows whose region write completed (a restart skips them)."""
    group = _open(path, "r", storage_options)
    flags = np.asarray(_member(group, CHUNK_DONE_VARIABLE)[...])
    return {w for w in windows if flags[w.row_off // chunk_size, w.col_off // chunk_size] == 1}


def read_features(
    path: str,
    plan_variables: list[tuple[str, str]],
    window: Window,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """The feature stack of ``window``: (n_features, h, w) float32, in feature order.

    int16 variables are decoded (``pipeline.cube.encoding.decode``: NaN for the fill value),
    float ones read as they are; a static (y, x) variable (an encoder's output) is one feature.
    """
    group = _open(path, "r", storage_options)
    rows, cols = window.slices
    arrays = []
    for name, _time_dim in plan_variables:
        array = group[name]
        assert isinstance(array, zarr.Array)
        arrays.append(array)
    stack: np.ndarray | None = None
    start = 0
    for array in arrays:
        if array.ndim == 2:  # a static variable: one feature
            values = np.asarray(array[rows, cols])[np.newaxis]
        else:
            values = np.asarray(array[:, rows, cols])
        if stack is None:  # one array for all features (no concatenation of the parts)
            n_features = sum(a.shape[0] if a.ndim == 3 else 1 for a in arrays)
            stack = np.empty((n_features, *values.shape[1:]), dtype=np.float32)
        target = stack[start : start + values.shape[0]]
        if values.dtype == np.int16:
            decode(values, VariableEncoding.from_attributes(array.attrs), out=target)
        else:
            target[...] = values
        start += values.shape[0]
    if stack is None:
        raise ValueError("read_features needs at least one variable")
    return stack


def open_cube(path: str, storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The cube as a lazy xarray Dataset whose time series decode to float32 (the values
    sitsflow uses, bit for bit).

    ``xarray.open_zarr`` decodes the int16 variables in float64: Zarr v3 attributes are JSON,
    so the float32 type of ``scale_factor`` cannot be stored and xarray takes a Python float
    (float64) for it. The float32 cast of that exact float64 product is sitsflow's value.
    """
    options = dict(storage_options) if storage_options and "://" in path else None
    cube = xr.open_zarr(path, storage_options=options)
    scaled = [name for name, v in cube.data_vars.items() if "scale_factor" in v.encoding]
    return cube.assign({name: cube[name].astype(np.float32) for name in scaled})
