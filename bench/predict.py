"""Prediction benchmark: blockwise prediction on a dask cluster against in-memory ``predict_proba``.

    python -m bench.predict              # tiles of 512 and 1536 px, RF of 100 trees, 2 threads
    python -m bench.predict --quick      # tiles of 256 and 512 px, 20 trees: a smoke run
    python -m bench.predict --tiles 1024 --trees 200 --json out.json
    python -m bench.predict --profile    # one process, one thread: where a tile's time goes

Data: the real Slovenia Sentinel-2 patch (eo-learn, tests/data), gap-filled onto the 2017
10-day grid (37 NDVI features), tiled to a square of ``tile`` pixels and written as a Zarr v3
feature cube in chunks of ``--chunk`` pixels. Model: a random forest trained on the patch's
land-use labels with sitsflow, saved with sitsflow (skops).

Both paths use the same number of threads (``--threads``) and the same saved model:

* ``in-memory``: a fresh process loads the whole cube into one (pixels, features) array and times
  ``predict_proba`` on it, the forest's ``n_jobs`` set to the thread count.
* ``blockwise``: ``pipeline.predict.blockwise.predict_chunk`` on a LocalCluster of ``--threads``
  worker processes of one thread, as the run's predict stage: every chunk read from the cube,
  predicted, labels and confidence written to the map store. Workers have imported sitsflow
  before the clock starts; "cold" includes each worker loading the model once, "warm" is a second
  pass with the model loaded.

The ratio is blockwise throughput over in-memory throughput (in-memory seconds / blockwise
seconds), measured in one run. Peak memory is each process's peak resident set (VmHWM), imports
and model included; the blockwise figure is the largest worker's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "tests" / "data" / "eolearn-slovenia-s2" / "TestEOPatch"
CLASSES = (2, 3, 4, 8)  # LULC codes with enough pixels to learn
VARIABLES = (("s2_ndvi", "s2_time"),)


@dataclass(frozen=True)
class Result:
    tile: int
    pixels: int
    in_memory_s: float
    blockwise_cold_s: float
    blockwise_warm_s: float
    in_memory_cpu_s: float
    blockwise_cold_cpu_s: float
    in_memory_peak_mib: float
    worker_peak_mib: float
    identical_labels: bool

    @property
    def ratio(self) -> float:
        return self.in_memory_s / self.blockwise_cold_s

    @property
    def ratio_warm(self) -> float:
        return self.in_memory_s / self.blockwise_warm_s

    @property
    def cpu_ratio(self) -> float:
        """In-memory CPU seconds over blockwise CPU seconds (cold): the work each path spends,
        whatever else runs on the machine."""
        return self.in_memory_cpu_s / self.blockwise_cold_cpu_s


def _peak_mib() -> float:
    """This process's peak resident set since it started its program (VmHWM). getrusage's
    ru_maxrss would not do: Linux keeps it across exec, so a freshly spawned worker would report
    its parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def slovenia_stack() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(37, 101, 100) gap-filled NDVI, land-use labels (101, 100) and the feature names."""
    from pipeline.cube.gapfill import gapfill
    from pipeline.model import DateGrid, day_number

    if not PATCH.is_dir():
        sys.exit(f"the Slovenia patch is not at {PATCH} (see its SOURCE.md)")
    ndvi = np.load(PATCH / "data" / "NDVI.npy")[..., 0]
    valid = (np.load(PATCH / "mask" / "CLM.npy")[..., 0] == 0) & (
        np.load(PATCH / "mask" / "IS_DATA.npy")[..., 0] == 1
    )
    times = [datetime.fromisoformat(t) for t in json.loads((PATCH / "timestamps.json").read_text())]
    dates = DateGrid(date(2017, 1, 1), date(2017, 12, 31), 10).dates
    filled = gapfill(ndvi, valid, [day_number(t) for t in times], [day_number(d) for d in dates])
    labels = np.load(PATCH / "mask_timeless" / "LULC.npy")[..., 0].astype(np.int64)
    return filled.values, labels, [f"s2_ndvi_{d:%Y%m%d}" for d in dates]


def train_forest(stack: np.ndarray, labels: np.ndarray, names: list[str], trees: int,
                 folder: Path) -> tuple[int, ...]:  # fmt: skip
    from pipeline.learn import save_model, train_model
    from pipeline.manifest import ModelSpec

    table = stack.reshape(stack.shape[0], -1).T
    rows = np.isin(labels.ravel(), CLASSES)
    spec = ModelSpec(params={"n_estimators": trees, "n_jobs": 1})
    model, contract = train_model(spec, table[rows], labels.ravel()[rows], names, seed=0)
    save_model(model, contract, folder)
    return contract.classes


def write_cube(stack: np.ndarray, tile: int, chunk: int, path: Path) -> None:
    """The patch tiled to tile x tile pixels, as a cube store of one variable (compressed as
    the cube stage compresses)."""
    import zarr

    from pipeline.cube.store import COMPRESSOR

    reps = (1, -(-tile // stack.shape[1]), -(-tile // stack.shape[2]))
    tiled = np.tile(stack, reps)[:, :tile, :tile]
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array(
        "s2_ndvi",
        shape=tiled.shape,
        chunks=(tiled.shape[0], chunk, chunk),
        dtype="float32",
        fill_value=np.float32(np.nan),
        compressors=[COMPRESSOR],  # as the cube stage writes it
    )
    array[:] = tiled


def in_memory(
    cube: str, model_folder: str, threads: int, labels_out: str
) -> tuple[float, float, float]:
    """In a fresh process: the whole cube as one array, predict_proba timed alone."""
    import zarr

    from pipeline.learn import load_model

    stack = np.asarray(zarr.open_group(cube, mode="r")["s2_ndvi"][:])  # type: ignore[index]
    table = np.ascontiguousarray(stack.reshape(stack.shape[0], -1).T)
    del stack
    model, _ = load_model(Path(model_folder))
    model.set_params(n_jobs=threads)
    started, cpu = time.perf_counter(), time.process_time()
    proba = model.predict_proba(table)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    labels = np.asarray(model.classes_)[proba.argmax(axis=1)].astype(np.uint8)
    top2 = np.sort(proba, axis=1)[:, -2:]
    tied = (top2[:, 1] - top2[:, 0]) < 1e-9  # a tie may go either way with another sum order
    np.save(labels_out, np.where(tied, 0, labels))
    return seconds, cpu, _peak_mib()


def blockwise(
    cube: str,
    model_folder: str,
    store: str,
    tile: int,
    chunk: int,
    threads: int,
    workers: int,
    classes: tuple[int, ...],
) -> tuple[float, float, float, float]:
    """The predict stage on a fresh LocalCluster: cold and warm seconds, cold CPU seconds of all
    workers, largest worker peak MiB."""
    import logging

    from distributed import Client, LocalCluster

    from pipeline.model import GridSpec
    from pipeline.parallel import run_units
    from pipeline.predict.blockwise import (
        MapEncoding,
        PredictTask,
        create_map_store,
        predict_chunk,
    )

    logging.getLogger("distributed").setLevel(logging.ERROR)
    grid = GridSpec("EPSG:32633", (10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0), tile, tile)
    encoding = MapEncoding.for_classes(classes)
    create_map_store(store, grid, chunk, encoding)
    tasks = [
        PredictTask(cube, VARIABLES, model_folder, store, window, encoding)
        for window in grid.chunks(chunk)
    ]
    with LocalCluster(
        n_workers=workers, threads_per_worker=threads // workers, processes=True,
        memory_limit="8GiB",
        host="127.0.0.1", dashboard_address="127.0.0.1:0",
    ) as cluster, Client(cluster) as client:  # fmt: skip
        client.wait_for_workers(workers)
        # Worker start-up (imports) is not prediction; loading the model is, in the cold pass.
        client.run(importlib.import_module, "pipeline.predict.blockwise")
        timings: list[float] = []
        cpu_before = sum(client.run(time.process_time).values())
        for _ in range(2):
            started = time.perf_counter()
            run_units(client, predict_chunk, tasks, key_prefix=f"predict-{len(timings)}")
            timings.append(time.perf_counter() - started)
            if len(timings) == 1:
                cold_cpu = sum(client.run(time.process_time).values()) - cpu_before
        peaks = client.run(_peak_mib)
    return timings[0], timings[1], cold_cpu, max(peaks.values())


def run_tile(stack: np.ndarray, tile: int, chunk: int, threads: int, workers: int, model: Path,
             classes: tuple[int, ...], work: Path) -> Result:  # fmt: skip
    import zarr

    cube = work / f"cube-{tile}.zarr"
    write_cube(stack, tile, chunk, cube)
    labels_file = work / f"labels-{tile}.npy"
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        memory_s, memory_cpu, memory_peak = pool.submit(
            in_memory, str(cube), str(model), threads, str(labels_file)
        ).result()
    store = work / f"map-{tile}.zarr"
    cold, warm, cold_cpu, worker_peak = blockwise(
        str(cube), str(model), str(store), tile, chunk, threads, workers, classes
    )
    mapped = np.asarray(zarr.open_group(str(store), mode="r")["label"][:])  # type: ignore[index]
    expected = np.load(labels_file)
    decided = expected != 0
    identical = bool(np.array_equal(mapped.ravel()[decided], expected[decided]))
    shutil.rmtree(cube)
    shutil.rmtree(store)
    return Result(
        tile, tile * tile, memory_s, cold, warm, memory_cpu, cold_cpu, memory_peak, worker_peak,
        identical,
    )  # fmt: skip


def _profile_worker(cube: str, model_folder: str, store: str, tile: int, chunk: int,
                    classes: tuple[int, ...]) -> dict[str, float]:  # fmt: skip
    """In a fresh process, one thread: the steps of ``predict_chunk`` for every chunk of the
    tile, one after the other, each timed (CPU seconds), then ``predict_proba`` on the whole
    tile as one table."""
    import zarr

    from pipeline.cube.store import read_features
    from pipeline.learn import load_model
    from pipeline.model import GridSpec
    from pipeline.predict.blockwise import MapEncoding, create_map_store, predict_stack

    grid = GridSpec("EPSG:32633", (10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0), tile, tile)
    encoding = MapEncoding.for_classes(classes)
    create_map_store(store, grid, chunk, encoding)
    phases = dict.fromkeys(("load", "read", "proba", "stack", "write"), 0.0)
    clock = time.process_time
    started = clock()
    model, _ = load_model(Path(model_folder))
    model.set_params(n_jobs=1)
    phases["load"] = clock() - started
    proba = model.predict_proba

    def timed_proba(table: Any) -> Any:
        begun = clock()
        try:
            return proba(table)
        finally:
            phases["proba"] += clock() - begun

    model.predict_proba = timed_proba  # an instance attribute: predict_table calls this one
    for window in grid.chunks(chunk):
        begun = clock()
        stack = read_features(cube, list(VARIABLES), window)
        phases["read"] += clock() - begun
        begun = clock()
        layers = predict_stack(model, stack, encoding)
        phases["stack"] += clock() - begun
        begun = clock()
        group = zarr.open_group(store, mode="r+")
        rows, cols = window.slices
        for name, values in layers.items():
            group[name][rows, cols] = values  # type: ignore[index]
        phases["write"] += clock() - begun
    total = clock() - started
    whole = np.asarray(zarr.open_group(cube, mode="r")["s2_ndvi"][:])  # type: ignore[index]
    table = np.ascontiguousarray(whole.reshape(whole.shape[0], -1).T)
    begun = clock()
    proba(table)
    in_memory = clock() - begun
    return {
        "load model (skops, once per worker)": phases["load"],
        "read chunk (Zarr, decode)": phases["read"],
        "predict_proba (sklearn), chunk by chunk": phases["proba"],
        "rest of predict_stack (NaN test, argmax, encode)": phases["stack"] - phases["proba"],
        "write labels + confidence (Zarr)": phases["write"],
        "blockwise total": total,
        "in-memory predict_proba, same pixels, one table": in_memory,
    }


def profile(stack: np.ndarray, tile: int, chunk: int, model: Path, classes: tuple[int, ...],
            work: Path) -> dict[str, float]:  # fmt: skip
    cube = work / f"cube-{tile}.zarr"
    write_cube(stack, tile, chunk, cube)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(
            _profile_worker, str(cube), str(model), str(work / "map.zarr"), tile, chunk, classes
        ).result()


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"Prediction: random forest of {args.trees} trees, 37 features, {args.threads} threads "
        f"({args.workers} worker process(es) for blockwise), chunks of {args.chunk} px",
        "",
        "| tile (px) | in-memory s | blockwise s (cold / warm) | ratio (cold / warm) | "
        "CPU s in-memory / blockwise | CPU ratio | peak MiB in-memory | peak MiB per worker | "
        "same labels |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.tile} x {r.tile} | {r.in_memory_s:.2f} | {r.blockwise_cold_s:.2f} / "
            f"{r.blockwise_warm_s:.2f} | {r.ratio:.2f}x / {r.ratio_warm:.2f}x | "
            f"{r.in_memory_cpu_s:.2f} / {r.blockwise_cold_cpu_s:.2f} | {r.cpu_ratio:.2f}x | "
            f"{r.in_memory_peak_mib:.0f} | {r.worker_peak_mib:.0f} | "
            f"{'yes' if r.identical_labels else 'NO'} |"
        )
    largest = results[-1]
    lines += ["", f"ratio (blockwise / in-memory throughput, {largest.tile} px tile, cold): "
              f"{largest.ratio:.2f}x"]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 1536])
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--workers", type=int, help="worker processes sharing the threads (default: one per thread)"
    )
    parser.add_argument("--quick", action="store_true", help="tiles 256 and 512, 20 trees")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--profile", action="store_true", help="CPU seconds per phase, one process, one thread"
    )
    args = parser.parse_args(argv)
    args.workers = args.workers or args.threads
    if args.threads % args.workers:
        parser.error("--threads must be a multiple of --workers")
    if args.quick:
        args.tiles, args.trees = [256, 512], 20
    stack, labels, names = slovenia_stack()
    with tempfile.TemporaryDirectory(prefix="sitsflow-bench-predict-") as tmp:
        work = Path(tmp)
        classes = train_forest(stack, labels, names, args.trees, work / "model")
        if args.profile:
            tile = max(args.tiles)
            phases = profile(stack, tile, args.chunk, work / "model", classes, work)
            print(f"CPU s per phase, {tile} x {tile} px in {args.chunk} px chunks, one thread:")
            for phase, seconds in phases.items():
                print(f"  {phase:48s} {seconds:7.2f}")
            return 0
        results = [
            run_tile(
                stack, tile, args.chunk, args.threads, args.workers, work / "model", classes, work
            )
            for tile in sorted(args.tiles)
        ]
    print(report(results, args))
    if args.json:
        data: list[dict[str, Any]] = [
            {**asdict(r), "ratio": r.ratio, "ratio_warm": r.ratio_warm, "cpu_ratio": r.cpu_ratio}
            for r in results
        ]
        args.json.write_text(json.dumps(data, indent=2))
    return 0 if all(r.identical_labels for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
