"""Cube build benchmark: sitsflow against the naive stackstac path, eo-learn and the read floor.

    python -m bench.cube                 # 2048 x 2048 px, 32 dates (docs/benchmarks.md)
    python -m bench.cube --quick         # 512 x 512 px, 12 dates: a smoke run (seconds)
    python -m bench.cube --only sitsflow,floor --size 4096
    python -m bench.cube --only floor,writefloor,sitsflow   # what writing the cube costs at best
    python -m bench.cube --profile       # where sitsflow's time goes, phase by phase, one chunk

The data are generated here, seeded: S2-like COGs (DEFLATE, 512 px blocks) of one tile in
EPSG:32631, four 10 m bands (B02, B03, B04, B08, uint16, no-data 0) and a 20 m scene
classification layer (SCL, uint8: 3 shadow, 8/9/10 clouds) per date, with clouds on every date.
Every path does the same work on the same cores (2 worker processes of 1 thread): read,
mask (SCL), gap-fill onto a 10-day date grid, NDVI, write. Paths:

* ``sitsflow``: pipeline.cube on a dask LocalCluster, Zarr v3 output.
* ``naive``: what a user would write: stackstac + ``where`` + ``interpolate_na`` + ``interp`` on a
  LocalCluster, ``to_zarr``.
* ``eolearn``: eo-learn 1.5.7's workflow per 512 px patch (a window-reading task,
  LinearInterpolationTask, NormalizedDifferenceIndexTask, SaveTask) with its EOExecutor on 2
  workers, run in its own interpreter (``--eolearn-python``; its pins conflict with ours).
* ``floor``: plain rasterio reads of every input pixel once, 2 processes.
* ``writefloor``: the least any build of this cube does: the floor's reads (windowed, per
  chunk) plus compressing and writing the cube's own bytes with its codec (sitsflow's int16
  codes, loaded before the clock), computing nothing. Its speed bounds every path's.
  ``writefloor-raw``: the same bytes written without compression (an uncompressed store).

Peak memory per worker is each worker process's peak resident set (getrusage), imports included.
This module imports only the standard library, numpy and rasterio at the top, so that the
eo-learn interpreter can run its part (``--eolearn-worker``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

BANDS = ("B02", "B03", "B04", "B08")
BAND_NAMES = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
INVALID_SCL = (0, 3, 8, 9, 10)  # no data, cloud shadow, cloud medium/high, cirrus
EPSG = 32631
LEFT, TOP = 300_000.0, 4_900_020.0  # the corner of Sentinel-2 tile 31TCJ
START, END, STEP = date(2021, 1, 1), date(2021, 12, 31), 10
WORKERS = 2
CHUNK = 512
REPO = Path(__file__).resolve().parents[1]
DASK_DEFAULT_MALLOC = False  # --dask-default-malloc: keep dask's MALLOC_TRIM_THRESHOLD_


# --- data --------------------------------------------------------------------------------------


def acquisition_dates(n: int, seed: int) -> list[datetime]:
    rng = np.random.default_rng(seed)
    days = np.sort(rng.choice(np.arange(2, 362), size=n, replace=False))
    return [datetime(2021, 1, 1, 10, 30) + timedelta(days=int(d)) for d in days]


def _smooth_field(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Random field varying over ``cell`` pixels (bilinear upsampling of coarse noise)."""
    n = size // cell + 2
    coarse = rng.random((n, n), dtype=np.float32)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / cell
    i = coords.astype(np.int64)
    w = coords - i
    rows = coarse[i] * (1 - w)[:, None] + coarse[i + 1] * w[:, None]
    return rows[:, i] * (1 - w)[None, :] + rows[:, i + 1] * w[None, :]


def _write_one(job: tuple[str, np.ndarray, float, str, int]) -> None:
    path, data, resolution, dtype, nodata = job
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": dtype,
        "crs": f"EPSG:{EPSG}",
        "transform": from_origin(LEFT, TOP, resolution, resolution),
        "nodata": nodata,
        "compress": "DEFLATE",
        "predictor": 2,
        "blocksize": 512,
        "overviews": "NONE",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def generate(root: Path, size: int, n_dates: int, seed: int = 0) -> dict[str, Any]:
    """Write the S2-like series under ``root`` (once: reused when the parameters match)."""
    meta_path = root / "dataset.json"
    params = {"size": size, "n_dates": n_dates, "seed": seed, "version": 1}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["params"] == params:
            return dict(meta)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    dates = acquisition_dates(n_dates, seed)
    # Fields: blocky parcels of 8 crop types, each with its own phenology.
    parcels = (_smooth_field(rng, size, 48) * 7.99).astype(np.int64)
    peak_day = rng.uniform(120, 240, 8)[parcels].astype(np.float32)
    amplitude = rng.uniform(0.2, 0.6, 8)[parcels].astype(np.float32)
    soil = (0.08 + 0.1 * _smooth_field(rng, size, 200)).astype(np.float32)
    items = []
    with ProcessPoolExecutor(WORKERS) as pool:
        for when in dates:
            doy = when.timetuple().tm_yday
            ndvi = amplitude * np.exp(-(((doy - peak_day) / 45.0) ** 2)) + 0.15
            cloud_cover = float(rng.uniform(0.0, 0.7))
            cloudiness = _smooth_field(rng, size, 96)
            cloud = cloudiness < np.quantile(cloudiness[::8, ::8], cloud_cover)
            noise = rng.normal(0, 0.005, (size, size)).astype(np.float32)
            red = soil * (1 - ndvi) + noise
            nir = red * (1 + ndvi) / (1 - ndvi)
            bands = {"B02": red * 0.7, "B03": red * 0.9 + 0.01, "B04": red, "B08": nir}
            folder = root / f"{when:%Y%m%d}"
            folder.mkdir()
            jobs = []
            for name, reflectance in bands.items():
                dn = np.where(cloud, 6000, reflectance * 10_000).clip(1, 65535).astype(np.uint16)
                jobs.append((str(folder / f"{name}.tif"), dn, 10.0, "uint16", 0))
            scl = np.where(cloud, 9, np.where(ndvi > 0.3, 4, 5)).astype(np.uint8)[::2, ::2]
            scl[:4, :] = 0  # a strip of no data, as at a swath edge
            jobs.append((str(folder / "SCL.tif"), np.ascontiguousarray(scl), 20.0, "uint8", 0))
            list(pool.map(_write_one, jobs))
            items.append(_stac_item(folder, when, size))
    meta = {
        "params": params,
        "size": size,
        "dates": [d.isoformat() for d in dates],
        "items": items,
        "root": str(root),
    }
    meta_path.write_text(json.dumps(meta))
    return meta


def _stac_item(folder: Path, when: datetime, size: int) -> dict[str, Any]:
    def asset(name: str, resolution: float) -> dict[str, Any]:
        n = round(size * 10 / resolution)
        return {
            "href": str(folder / f"{name}.tif"),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "proj:epsg": EPSG,
            "proj:shape": [n, n],
            "proj:transform": [resolution, 0.0, LEFT, 0.0, -resolution, TOP],
        }

    right, bottom = LEFT + size * 10, TOP - size * 10
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
        "id": f"S2_31TCJ_{when:%Y%m%d}",
        "bbox": [0.5, 44.0, 1.5, 44.3],  # not used: every path gets the grid explicitly
        "geometry": None,
        "properties": {"datetime": when.isoformat() + "Z", "proj:epsg": EPSG},
        "assets": {**{b: asset(b, 10.0) for b in BANDS}, "SCL": asset("SCL", 20.0)},
        "links": [],
        "_bounds": [LEFT, bottom, right, TOP],
    }


def target_dates() -> list[date]:
    n = (END - START).days // STEP + 1
    return [START + timedelta(days=i * STEP) for i in range(n)]


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds (user + system) of this process, or of its finished children: a figure less
    sensitive than wall time to other jobs on a shared machine."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# --- floor -------------------------------------------------------------------------------------


def _read_files(paths: list[str]) -> tuple[int, float, float]:
    cpu = _cpu_seconds()
    pixels = 0
    for path in paths:
        with rasterio.open(path) as src:
            pixels += src.read(1).size
    return pixels, _maxrss_mib(), _cpu_seconds() - cpu


def run_floor(meta: dict[str, Any]) -> dict[str, Any]:
    paths = [a["href"] for item in meta["items"] for a in item["assets"].values()]
    with ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(_maxrss_mib_noop, range(WORKERS)))  # start the processes first
        started = time.perf_counter()
        results = list(pool.map(_read_files, [paths[i::WORKERS] for i in range(WORKERS)]))
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "input_pixels": sum(r[0] for r in results),
        "peak_mib": max(r[1] for r in results),
        "cpu_seconds": sum(r[2] for r in results),
    }


def _maxrss_mib_noop(_: int) -> float:
    return _maxrss_mib()


# --- write floor: read once and write the cube's own bytes, computing nothing ------------------


def _read_and_write(
    job: tuple[dict[str, Any], list[tuple[int, int]], str, str, Any, bool],
) -> tuple[int, float, float, float]:
    """Read every input pixel of some 512 px chunks (windowed, as a chunk build does, each file
    opened once) and write each chunk's cube variables, compressed with the cube's codec, one
    file each. The variables are sitsflow's own int16 codes of those chunks, loaded from its
    cube before the clock starts: the same bytes to compress and write, nothing computed."""
    import numcodecs
    import zarr
    from rasterio.windows import Window as RioWindow

    meta, corners, out, cube, barrier, compressed = job
    numcodecs.blosc.use_threads = False  # one thread per worker, as the other paths
    codec = numcodecs.Blosc("lz4", 1, numcodecs.Blosc.SHUFFLE)  # the cube's (pipeline.cube.store)
    encode = codec.encode if compressed else (lambda series: series.tobytes())
    group = zarr.open_group(cube, mode="r")
    arrays = {n: a for n, a in group.arrays() if a.dtype == np.int16 and a.ndim == 3}
    names = sorted(arrays)
    codes = {
        (row, col): [np.asarray(arrays[n][:, row : row + CHUNK, col : col + CHUNK]) for n in names]
        for row, col in corners
    }
    items = meta["items"]
    barrier.wait()  # both workers start the clock together
    cpu, started = _cpu_seconds(), time.perf_counter()
    with contextlib.ExitStack() as stack:
        files = [
            {key: stack.enter_context(rasterio.open(item["assets"][key]["href"]))
             for key in (*BANDS, "SCL")}
            for item in items
        ]  # fmt: skip
        written = 0
        for row, col in corners:
            for opened in files:
                for band in BANDS:
                    opened[band].read(1, window=RioWindow(col, row, CHUNK, CHUNK))
                half = CHUNK // 2
                opened["SCL"].read(1, window=RioWindow(col // 2, row // 2, half, half))
            for name, series in zip(names, codes[(row, col)], strict=True):
                data = encode(series)
                (Path(out) / f"{name}-{row}-{col}").write_bytes(data)
                written += len(data)
    return written, _maxrss_mib(), _cpu_seconds() - cpu, time.perf_counter() - started


def _cube_shape(cube: Path) -> tuple[int, ...] | None:
    import zarr

    try:
        return tuple(dict(zarr.open_group(cube, mode="r").arrays())["s2_blue"].shape)
    except Exception:  # absent or unreadable: built again
        return None


def run_write_floor(
    meta: dict[str, Any], out: Path, cube: Path, *, compressed: bool = True
) -> dict[str, Any]:
    """The least any build of this cube does: the read floor's reads plus compressing and
    writing the cube's bytes (those of sitsflow's cube at ``cube``, built first if absent).
    ``compressed=False``: the same bytes written raw (an uncompressed store)."""
    import multiprocessing

    size = meta["size"]
    if _cube_shape(cube) != (len(target_dates()), size, size):  # absent, or of other data
        run_sitsflow(meta, cube)
    corners = [(r, c) for r in range(0, size, CHUNK) for c in range(0, size, CHUNK)]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(WORKERS) as pool:
        barrier = manager.Barrier(WORKERS)
        jobs = [
            (meta, corners[i::WORKERS], str(out), str(cube), barrier, compressed)
            for i in range(WORKERS)
        ]
        results = list(pool.map(_read_and_write, jobs))
    return {
        "seconds": max(r[3] for r in results),
        "bytes_written": sum(r[0] for r in results),
        "peak_mib": max(r[1] for r in results),
        "cpu_seconds": sum(r[2] for r in results),
    }


# --- sitsflow ----------------------------------------------------------------------------------


def sitsflow_plan(meta: dict[str, Any]) -> Any:
    from pipeline.catalog.sensors import BandRead, MaskRule, SensorProfile
    from pipeline.cube.plan import plan_cube
    from pipeline.model import Acquisition, AssetRef, GridSpec

    size = meta["size"]
    grid = GridSpec(f"EPSG:{EPSG}", (10.0, 0.0, LEFT, 0.0, -10.0, TOP), size, size)
    profile = SensorProfile(
        name="s2",
        bands=tuple(BandRead(BAND_NAMES[b], b, 1e-4, 0.0, 0) for b in BANDS),
        masks=(MaskRule("SCL", INVALID_SCL),),
        date_step_days=STEP,
    )
    acquisitions = [
        Acquisition(
            item_id=item["id"],
            sensor="s2",
            datetime=datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00")),
            assets={k: AssetRef(v["href"]) for k, v in item["assets"].items()},
            grid=grid,
        )
        for item in meta["items"]
    ]
    return plan_cube(grid, [(profile, acquisitions)], START, END, ["ndvi"], CHUNK)


def run_sitsflow(meta: dict[str, Any], out: Path) -> dict[str, Any]:
    import dask
    from distributed import Client, LocalCluster

    from pipeline.cube.build import CubeChunkTask, build_chunk
    from pipeline.cube.store import create_cube_store

    plan = sitsflow_plan(meta)
    shutil.rmtree(out, ignore_errors=True)
    with (
        dask.config.set(WORKER_ENV if not DASK_DEFAULT_MALLOC else {}),
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            memory_limit="6GiB",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_imports)
        cpu = sum(client.run(_cpu_seconds).values()) + _cpu_seconds()
        started = time.perf_counter()
        create_cube_store(plan, str(out))
        tasks = [CubeChunkTask(plan, w, str(out)) for w in plan.windows]
        futures = client.map(build_chunk, tasks, pure=False)
        reports = client.gather(futures)
        seconds = time.perf_counter() - started
        cpu = sum(client.run(_cpu_seconds).values()) + _cpu_seconds() - cpu
        peaks = client.run(_maxrss_mib)
    assert len(reports) == len(plan.windows)
    return {
        "seconds": seconds,
        "peak_mib": max(peaks.values()),
        "chunks": len(tasks),
        "cpu_seconds": cpu,
    }


# dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which turns off glibc's
# adaptive mmap threshold: every large array is then mapped, faulted in and unmapped again on
# every chunk (measured: 40 % more CPU per cube chunk, mostly system time). Both dask paths run
# with it unset; docs/benchmarks.md gives the figure with dask's default.
WORKER_ENV = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def _warm_imports() -> None:
    # Every path pays its imports before the clock; sitsflow's worker warm-up also loads its
    # compiled kernels (a run does it while the driver plans: pipeline.run.clusters).
    from pipeline.cube.build import load_kernels

    load_kernels()


# --- naive: stackstac + xarray -----------------------------------------------------------------


def run_naive(meta: dict[str, Any], out: Path) -> dict[str, Any]:
    import dask
    import pandas as pd
    import stackstac
    import xarray as xr
    from distributed import Client, LocalCluster

    items = [{k: v for k, v in item.items() if k != "_bounds"} for item in meta["items"]]
    bounds = tuple(meta["items"][0]["_bounds"])
    shutil.rmtree(out, ignore_errors=True)
    with (
        dask.config.set(WORKER_ENV if not DASK_DEFAULT_MALLOC else {}),
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            memory_limit="6GiB",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_naive)
        cpu = sum(client.run(_cpu_seconds).values()) + _cpu_seconds()
        started = time.perf_counter()
        stack = stackstac.stack(
            items,
            assets=[*BANDS, "SCL"],
            epsg=EPSG,
            resolution=10,
            bounds=bounds,
            chunksize=CHUNK,
            dtype="float32",
            fill_value=np.float32(np.nan),
            rescale=False,
        )
        scl = stack.sel(band="SCL")
        clear = ~scl.isin(list(INVALID_SCL)) & scl.notnull()
        bands = stack.sel(band=list(BANDS)).where(clear) * 1e-4
        bands = bands.chunk({"time": -1})
        filled = bands.interpolate_na(dim="time", method="linear")
        resampled = filled.interp(time=pd.to_datetime(target_dates()))
        ndvi = (resampled.sel(band="B08") - resampled.sel(band="B04")) / (
            resampled.sel(band="B08") + resampled.sel(band="B04")
        )
        dataset = xr.Dataset(
            {**{BAND_NAMES[b]: resampled.sel(band=b, drop=True) for b in BANDS}, "ndvi": ndvi}
        )
        dataset = dataset.drop_vars([c for c in dataset.coords if c not in ("time", "x", "y")])
        dataset.attrs = {}
        for variable in dataset.variables.values():
            variable.attrs = {}  # stackstac's attributes are not JSON
        dataset.to_zarr(str(out), mode="w")
        seconds = time.perf_counter() - started
        cpu = sum(client.run(_cpu_seconds).values()) + _cpu_seconds() - cpu
        peaks = client.run(_maxrss_mib)
    return {"seconds": seconds, "peak_mib": max(peaks.values()), "cpu_seconds": cpu}


def _warm_naive() -> None:
    import stackstac  # noqa: F401
    import xarray  # noqa: F401


# --- eo-learn (runs in its own interpreter) ------------------------------------------------------


def run_eolearn(meta: dict[str, Any], out: Path, python: str) -> dict[str, Any]:
    meta_file = out.parent / "eolearn-meta.json"
    meta_file.write_text(json.dumps(meta))
    shutil.rmtree(out, ignore_errors=True)
    command = [python, "-m", "bench.cube", "--eolearn-worker", str(meta_file), str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"eo-learn run failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


try:  # only inside the eo-learn interpreter
    from eolearn.core import EOPatch, EOTask, FeatureType
    from sentinelhub import CRS, BBox
except ImportError:
    EOTask = object


class LoadWindowTask(EOTask):
    """eo-learn task: read one patch of every band and the SCL mask with windowed reads."""

    def __init__(self, items: list[dict[str, Any]], size: int, times: list[datetime]) -> None:
        self.items, self.size, self.times = items, size, times

    def execute(self, *, row: int, col: int) -> Any:
        from rasterio.windows import Window

        items, size = self.items, self.size
        h = w = min(CHUNK, size - row, size - col)
        data = np.empty((len(items), h, w, len(BANDS)), dtype=np.float32)
        invalid = np.zeros((len(items), h, w, 1), dtype=bool)
        for t, item in enumerate(items):
            for b, band in enumerate(BANDS):
                with rasterio.open(item["assets"][band]["href"]) as src:
                    raw = src.read(1, window=Window(col, row, w, h))
                data[t, :, :, b] = raw * np.float32(1e-4)
                invalid[t, :, :, 0] |= raw == 0
            with rasterio.open(item["assets"]["SCL"]["href"]) as src:
                scl = src.read(1, window=Window(col // 2, row // 2, w // 2, h // 2))
            scl = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)
            invalid[t, :, :, 0] |= np.isin(scl, INVALID_SCL)
        left, top = LEFT + col * 10, TOP - row * 10
        patch = EOPatch(bbox=BBox((left, top - h * 10, left + w * 10, top), CRS(EPSG)))
        patch.timestamps = self.times
        patch[FeatureType.DATA, "BANDS"] = data
        patch[FeatureType.MASK, "INVALID"] = invalid
        return patch


def eolearn_worker(meta_file: str, out: str) -> None:
    """The eo-learn path, inside the eo-learn interpreter; prints one JSON line."""
    from eolearn.core import (
        EOExecutor,
        EOWorkflow,
        FeatureType,
        OverwritePermission,
        SaveTask,
        linearly_connect_tasks,
    )
    from eolearn.features import NormalizedDifferenceIndexTask
    from eolearn.features.extra.interpolation import LinearInterpolationTask

    meta = json.loads(Path(meta_file).read_text())
    size = meta["size"]
    items = meta["items"]
    times = [datetime.fromisoformat(i["properties"]["datetime"].replace("Z", "")) for i in items]

    load = LoadWindowTask(items, size, times)
    interpolate = LinearInterpolationTask(
        (FeatureType.DATA, "BANDS"),
        mask_feature=(FeatureType.MASK, "INVALID"),
        resample_range=[d.isoformat() for d in target_dates()],
    )
    ndvi = NormalizedDifferenceIndexTask(
        (FeatureType.DATA, "BANDS"), (FeatureType.DATA, "NDVI"), (3, 2)
    )
    save = SaveTask(out, overwrite_permission=OverwritePermission.OVERWRITE_PATCH)
    nodes = linearly_connect_tasks(load, interpolate, ndvi, save)
    workflow = EOWorkflow(nodes)
    patches = [(r, c) for r in range(0, size, CHUNK) for c in range(0, size, CHUNK)]
    kwargs = [
        {nodes[0]: {"row": r, "col": c}, nodes[-1]: {"eopatch_folder": f"patch_{r}_{c}"}}
        for r, c in patches
    ]
    executor = EOExecutor(workflow, kwargs)
    own_cpu = _cpu_seconds()
    started = time.perf_counter()
    results = executor.run(workers=WORKERS, multiprocess=True, disable=True)
    seconds = time.perf_counter() - started
    errors = executor.get_failed_executions()
    if errors:
        raise RuntimeError(f"{len(errors)} eo-learn executions failed: {results[errors[0]]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    cpu = _cpu_seconds(resource.RUSAGE_CHILDREN) + _cpu_seconds() - own_cpu
    print(
        json.dumps(
            {"seconds": seconds, "peak_mib": peak, "patches": len(patches), "cpu_seconds": cpu}
        )
    )


# --- profile -----------------------------------------------------------------------------------


def profile_chunk(meta: dict[str, Any], out: Path) -> dict[str, tuple[float, float]]:
    """CPU seconds (user + system, all threads of this process) and of them system seconds, per
    phase and chunk: mean of 8 chunks after a warm one (which opens the files and loads the
    compiled kernels, as a worker does once). The chunks are built by ``build_chunk`` itself, in
    this process; each phase is timed around the function ``build_chunk`` calls for it, and
    "other" is the rest of ``build_chunk`` (ownership, counts, the report)."""
    from unittest import mock

    import pipeline.cube.build as build
    from pipeline.cube.store import create_cube_store

    plan = sitsflow_plan(meta)
    shutil.rmtree(out, ignore_errors=True)
    create_cube_store(plan, str(out))
    phases = {
        "read_sensor": "read + decode + mask",
        "gapfill_bands": "gap-fill (4 bands)",
        "compute_indices": "NDVI",
        "quantize": "int16 encoding",
        "write_region": "Zarr region write (LZ4)",
        "mark_chunk_done": "Zarr region write (LZ4)",
    }
    totals = {name: np.zeros(2) for name in [*dict.fromkeys(phases.values()), "other"]}

    def usage() -> np.ndarray:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return np.array([r.ru_utime + r.ru_stime, r.ru_stime])

    def timed(function: Any, name: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = usage()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += usage() - started

        return wrapper

    windows = plan.windows[:9]
    with contextlib.ExitStack() as stack:
        for attribute, name in phases.items():
            original = getattr(build, attribute)
            stack.enter_context(mock.patch.object(build, attribute, timed(original, name)))
        for n, window in enumerate(windows):
            spent = {name: np.zeros(2) for name in totals}
            started = usage()
            build.build_chunk(build.CubeChunkTask(plan, window, str(out)))
            spent["other"] = usage() - started - sum(spent.values())
            if n:
                for name in totals:
                    totals[name] += spent[name] / (len(windows) - 1)
    return {name: (float(v[0]), float(v[1])) for name, v in totals.items()}


# --- readers: stackstac, odc-stac, sitsflow's RasterioReader on the same chunk ------------------


def compare_readers(meta: dict[str, Any], repeat: int = 3) -> dict[str, float]:
    """Seconds to read one 512 px chunk of every band and the SCL (all dates) onto the 10 m grid,
    in one process, files already in the page cache; the values are checked to agree."""
    import pystac
    import stackstac
    from odc.geo.geobox import GeoBox
    from odc.stac import load as odc_load
    from rasterio.enums import Resampling

    from pipeline.cube.build import read_sensor
    from pipeline.cube.read import DatasetCache, RasterioReader

    plan = sitsflow_plan(meta)
    window = plan.windows[len(plan.windows) // 2]
    grid = plan.grid.window_grid(window)
    left, bottom, right, top = grid.bounds
    items = [{k: v for k, v in i.items() if k != "_bounds"} for i in meta["items"]]
    assets = [*BANDS, "SCL"]

    def with_stackstac() -> np.ndarray:
        stack = stackstac.stack(
            items,
            assets=assets,
            epsg=EPSG,
            resolution=10,
            bounds=(left, bottom, right, top),
            chunksize=CHUNK,
            dtype="float32",
            fill_value=np.float32(np.nan),
            rescale=False,
            resampling=Resampling.nearest,
        )
        return np.asarray(stack.compute(scheduler="synchronous").values)

    pystac_items = [pystac.Item.from_dict(i) for i in items]
    geobox = GeoBox((grid.height, grid.width), grid.affine, f"EPSG:{EPSG}")

    def with_odc() -> np.ndarray:
        data = odc_load(
            pystac_items,
            bands=assets,
            geobox=geobox,
            dtype="float32",
            resampling="nearest",
            chunks=None,
            pool=None,
        )
        return np.stack([data[a].values for a in assets], axis=1)

    cache = DatasetCache()

    def with_sitsflow() -> np.ndarray:
        values, _valid = read_sensor(plan.sensors[0], grid, RasterioReader(cache))
        return values

    def with_sitsflow_cold() -> np.ndarray:
        values, _valid = read_sensor(plan.sensors[0], grid, RasterioReader(DatasetCache()))
        return values

    results: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, function in (
        ("stackstac", with_stackstac),
        ("odc-stac", with_odc),
        ("sitsflow, files reopened", with_sitsflow_cold),
        ("sitsflow RasterioReader", with_sitsflow),
    ):
        function()  # warm: imports, GDAL headers
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            outputs[name] = function()
            times.append(time.perf_counter() - started)
        results[name] = min(times)
    # Same pixels: the bands (DN) of stackstac and odc-stac equal sitsflow's (scaled) values.
    ours = outputs["sitsflow RasterioReader"]
    for name in ("stackstac", "odc-stac"):
        theirs = outputs[name][:, : len(BANDS)] * np.float32(1e-4)
        theirs[theirs == 0] = np.nan
        np.testing.assert_allclose(theirs, ours, rtol=1e-6, err_msg=name)
    return results


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cube",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=2048, help="tile side in pixels")
    parser.add_argument("--dates", type=int, default=32, help="acquisitions")
    parser.add_argument("--quick", action="store_true", help="512 px, 12 dates")
    parser.add_argument(
        "--only", default="floor,sitsflow,eolearn,naive", help="comma-separated paths to run"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path")
    parser.add_argument("--data", default=str(REPO / "runs" / "bench-cube"), help="work folder")
    parser.add_argument("--eolearn-python", default=str(REPO / ".venv-bench-eolearn/bin/python"))
    parser.add_argument("--profile", action="store_true", help="phase timings of one chunk")
    parser.add_argument("--readers", action="store_true", help="stackstac vs odc-stac vs ours")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--dask-default-malloc",
        action="store_true",
        help="keep dask's MALLOC_TRIM_THRESHOLD_=65536 in the dask workers",
    )
    parser.add_argument("--eolearn-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DASK_DEFAULT_MALLOC
    DASK_DEFAULT_MALLOC = args.dask_default_malloc
    if args.eolearn_worker:
        eolearn_worker(*args.eolearn_worker)
        return
    size, n_dates = (512, 12) if args.quick else (args.size, args.dates)
    work = Path(args.data)
    started = time.perf_counter()
    meta = generate(work / f"data-{size}-{n_dates}", size, n_dates)
    print(
        f"data: {size} x {size} px, {n_dates} dates, {len(BANDS)} bands + SCL (20 m) "
        f"[{time.perf_counter() - started:.0f} s to generate or reuse]"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    if args.readers:
        for reader, seconds in compare_readers(meta).items():
            print(f"  {reader:24s} {seconds:6.3f} s per {CHUNK} px chunk, {n_dates} dates")
        return
    if args.profile:
        phases = profile_chunk(meta, work / "out-profile")
        print(f"  {'phase':24s} {'CPU s':>6s} {'of it sys':>9s}   per {CHUNK} px chunk")
        for phase, (seconds, system) in phases.items():
            print(f"  {phase:24s} {seconds:6.3f} {system:9.3f}")
        total = [sum(v[i] for v in phases.values()) for i in (0, 1)]
        print(f"  {'total':24s} {total[0]:6.3f} {total[1]:9.3f}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    n_out_dates = len(target_dates())
    pixel_dates = size * size * n_out_dates
    runners = {
        "floor": lambda: run_floor(meta),
        "writefloor": lambda: run_write_floor(meta, work / "out-writefloor", work / "out-sitsflow"),
        "writefloor-raw": lambda: run_write_floor(
            meta, work / "out-writefloor", work / "out-sitsflow", compressed=False
        ),
        "sitsflow": lambda: run_sitsflow(meta, work / "out-sitsflow"),
        "eolearn": lambda: run_eolearn(meta, work / "out-eolearn", args.eolearn_python),
        "naive": lambda: run_naive(meta, work / "out-naive"),
    }
    results: dict[str, list[dict[str, Any]]] = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        for _ in range(args.repeat):
            result = runners[name]()
            results.setdefault(name, []).append(result)
            print(
                f"  {name:14s} {result['seconds']:8.2f} s  peak {result['peak_mib']:7.0f} MiB/wkr",
                flush=True,
            )
    best = {name: min(r["seconds"] for r in runs) for name, runs in results.items()}
    cpu = {name: min(r.get("cpu_seconds", np.nan) for r in runs) for name, runs in results.items()}
    print(
        f"\n{size} x {size} px, {n_dates} acquisitions -> {n_out_dates} dates, "
        f"{WORKERS} workers x 1 thread, load average after: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'path':14s} {'wall s':>8s} {'Mpx-dates/s':>12s} {'x sitsflow':>11s} {'CPU s':>8s} "
        f"{'x sitsflow':>11s} {'peak MiB/worker':>16s}"
    )
    for name, seconds in best.items():
        peak = max(r["peak_mib"] for r in results[name])
        ratio = seconds / best["sitsflow"] if "sitsflow" in best else float("nan")
        cpu_ratio = cpu[name] / cpu["sitsflow"] if "sitsflow" in cpu else float("nan")
        print(
            f"{name:14s} {seconds:8.2f} {pixel_dates / seconds / 1e6:12.1f} {ratio:10.2f}x "
            f"{cpu[name]:8.1f} {cpu_ratio:10.2f}x {peak:16.0f}"
        )
    if "sitsflow" in best and "floor" in best:
        print(
            f"sitsflow speed / read floor speed: wall {best['floor'] / best['sitsflow']:.2f}, "
            f"CPU {cpu['floor'] / cpu['sitsflow']:.2f}"
        )
    if "writefloor" in best and "floor" in best:
        print(
            f"write floor speed / read floor speed: wall {best['floor'] / best['writefloor']:.2f}, "
            f"CPU {cpu['floor'] / cpu['writefloor']:.2f} (what any build that writes this cube "
            "can reach at best)"
        )
    if "sitsflow" in best and "eolearn" in best:
        print(
            f"sitsflow speed-up over eo-learn: wall {best['eolearn'] / best['sitsflow']:.1f}x, "
            f"CPU {cpu['eolearn'] / cpu['sitsflow']:.1f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size, "dates": n_dates, "runs": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
