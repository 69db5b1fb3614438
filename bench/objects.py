"""Objects benchmark: segmentation (per chunk with a halo, then stitched) and zonal statistics per
megapixel, with the peak memory of each worker; then the driver's step (the segment table with
mean and std per feature written as Parquet, and the segments' polygons as a GeoPackage) done the
two ways, whole (every segment's row and polygon in memory, as before issue 21's streaming) and
streamed chunk by chunk (``pipeline.objects.table``, what the stage does), with the driver's peak.

    python -m bench.objects                          # 1024 x 1024 px, 12 features, chunks of 256
    python -m bench.objects --size 2048 --method felzenszwalb --json out.json
    python -m bench.objects --size 2048 --features 48 --segment-features 12   # driver memory
    python -m bench.objects --statistics mean,p10,p50,p90   # exact percentiles against mean only

``--statistics`` (default ``mean,std``): what the table holds, as the manifest's
``objects.statistics``; with a percentile ``p<q>`` the zonal parts keep their pixels' values and
the driver holds the open segments' values (``pipeline.objects.table.complete_values``).

Data (seeded): ``--features`` smooth random fields (Gaussian-filtered noise) plus per-pixel
noise, float32, as read from a cube (F, h, w). Each chunk is a task of a pool of ``--workers``
spawned processes of one thread (as dask workers would run the stage's units); a task reads its
chunk (and halo) from a shared .npy file (memory-mapped), segments it and saves the result, or
sums its features per segment id. Stitching runs in the parent (two chunks in memory at a time).

Peak memory per worker is each worker process's peak resident set (VmHWM), imports included.
Throughput is megapixels per wall second of the pool (and per CPU second, summed over tasks).
The driver's step runs in a fresh process per way: its peak (VmHWM) less its resident set once
its imports are loaded is what the step itself held.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np


def _vmhwm_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, size: int, features: int, seed: int = 0) -> Path:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    stack = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(features, size, size)
    )
    for f in range(features):
        field = gaussian_filter(rng.normal(size=(size, size)), sigma=12)
        field = (field - field.mean()) / field.std()
        stack[f] = field + rng.normal(0, 0.2, size=(size, size))
    stack.flush()
    return path


def _windows(size: int, chunk: int) -> list[tuple[int, int, int, int]]:
    return [
        (r, c, min(chunk, size - r), min(chunk, size - c))
        for r in range(0, size, chunk)
        for c in range(0, size, chunk)
    ]


def _segment_task(
    args: tuple[str, tuple[int, int, int, int], dict[str, Any], str],
) -> dict[str, Any]:
    from pipeline.model import Window
    from pipeline.objects.segments import SegmentParams, segment_chunk

    data, window, params, out = args
    params = dict(params)
    channels = params.pop("channels")
    stack = np.load(data, mmap_mode="r")
    started, cpu = time.perf_counter(), time.process_time()

    def read(w: Window) -> np.ndarray:  # the first ``channels`` features, as NDVI dates would be
        return np.asarray(
            stack[:channels, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
        )

    chunk = segment_chunk(read, stack.shape[1:], Window(*window), SegmentParams(**params))
    o = chunk.outer
    np.savez(
        out,
        labels=chunk.labels,
        anchors=chunk.anchors,
        outer=[o.row_off, o.col_off, o.height, o.width],
    )
    return {
        "pid": os.getpid(),
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "peak_mib": _vmhwm_mib(),
    }


def _zonal_task(args: tuple[str, tuple[int, int, int, int], str, str, bool]) -> dict[str, Any]:
    from pipeline.objects.zonal import zonal_sums, zonal_values

    data, (r, c, h, w), ids_path, out, keep_values = args
    stack = np.load(data, mmap_mode="r")
    ids = np.load(ids_path, mmap_mode="r")
    started, cpu = time.perf_counter(), time.process_time()
    core = np.asarray(ids[r : r + h, c : c + w])
    chunk = np.asarray(stack[:, r : r + h, c : c + w])
    sums = zonal_sums(core, chunk)
    extra: dict[str, Any] = {"values": zonal_values(core, chunk).values} if keep_values else {}
    np.savez(  # as the stage's zonal unit saves its part
        out,
        core=core,
        present=np.unique(core[core > 0]),
        ids=sums.ids,
        count=sums.count,
        sums=sums.sums,
        squares=sums.squares,
        **extra,
    )
    return {
        "pid": os.getpid(),
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "peak_mib": _vmhwm_mib(),
    }


def _vmrss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _frame(sums: Any, features: int, chosen: tuple[str, ...], pixels: Any = None) -> Any:
    """The table of ``sums``'s segments, ``chosen`` statistics (percentiles from ``pixels``)."""
    import pandas as pd

    from pipeline.objects.zonal import percentile_of, percentiles, statistics

    mean, std = statistics(sums)
    values = {"mean": mean, "std": std}
    asked = {s: q for s in chosen if (q := percentile_of(s)) is not None}
    if asked:
        assert np.array_equal(pixels.ids, sums.ids)
        values.update(zip(asked, percentiles(pixels, list(asked.values())), strict=True))
    names = [f"f{i}_{s}" for s in chosen for i in range(features)]
    stacked = np.concatenate([values[s] for s in chosen], axis=1).astype(np.float32)
    frame = pd.DataFrame(stacked, columns=names)
    frame.insert(0, "pixels", sums.count)
    frame.insert(0, "segment", sums.ids)
    return frame


def _driver_task(
    args: tuple[str, list[tuple[int, int, int, int]], list[str], int, str, tuple[str, ...]],
) -> dict[str, Any]:
    """The table and the polygons of every segment, ``whole`` or ``streamed``, in this process."""
    import geopandas as gpd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.model import GridSpec, Window
    from pipeline.objects.build import polygons_of
    from pipeline.objects.table import (
        complete_pieces,
        complete_sums,
        complete_values,
        segment_index,
    )
    from pipeline.objects.zonal import (
        ZonalSums,
        ZonalValues,
        combine,
        combine_values,
        percentile_of,
    )

    way, windows, parts, size, out, chosen = args
    keep_values = any(percentile_of(s) is not None for s in chosen)
    grid = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), size, size)
    features = int(np.load(parts[0])["sums"].shape[1])
    from shapely.geometry import box

    warm = gpd.GeoDataFrame({"segment": [1]}, geometry=[box(0, 0, 1, 1)], crs=grid.crs)
    warm.to_file(f"{out}-warm.gpkg", layer="segments")  # GDAL's driver loads on first use
    pq.write_table(pa.table({"a": [1]}), f"{out}-warm.parquet")
    base = _vmrss_mib()
    started = time.perf_counter()

    def sums(path: str) -> ZonalSums:
        with np.load(path) as z:
            return ZonalSums(z["ids"], z["count"], z["sums"], z["squares"])

    def values(path: str) -> ZonalValues:
        with np.load(path) as z:
            return ZonalValues(z["ids"], z["count"], z["values"])

    def pieces() -> Any:
        for w, path in zip(windows, parts, strict=True):
            with np.load(path) as z:
                yield polygons_of(z["core"], grid, Window(*w))

    if way == "whole":
        pixels = combine_values([values(p) for p in parts]) if keep_values else None
        total = combine([sums(p) for p in parts])
        _frame(total, features, chosen, pixels).to_parquet(f"{out}.parquet")
        del pixels
        table_s = time.perf_counter() - started
        every = [p for chunk in pieces() for p in chunk]
        frame = gpd.GeoDataFrame(
            {"segment": [p[0] for p in every]}, geometry=[p[1] for p in every], crs=grid.crs
        )
        frame = frame.dissolve(by="segment").reset_index()
        frame.to_file(f"{out}.gpkg", layer="segments", promote_to_multi=True)
    else:

        def present(i: int, path: str) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
            with np.load(path) as z:
                return i, z["present"], z["ids"], z["count"]

        index = segment_index(present(i, p) for i, p in enumerate(parts))
        writer = None
        held: Any = [None] * len(parts)
        if keep_values:
            held = complete_values((values(p) for p in parts), index)
        streamed = zip(complete_sums((sums(p) for p in parts), index), held, strict=True)
        for done, pixels in streamed:
            frame = _frame(done, features, chosen, pixels)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(f"{out}.parquet", table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
        table_s = time.perf_counter() - started
        written = 0
        for whole in complete_pieces(pieces(), index):
            if whole:
                gpd.GeoDataFrame(
                    {"segment": [d[0] for d in whole]}, geometry=[d[1] for d in whole], crs=grid.crs
                ).to_file(
                    f"{out}.gpkg",
                    layer="segments",
                    mode="a" if written else "w",
                    promote_to_multi=True,
                )
                written += len(whole)
    return {
        "way": way,
        "wall_s": round(time.perf_counter() - started, 2),
        "table_s": round(table_s, 2),
        "base_mib": round(base, 1),
        "peak_mib": round(_vmhwm_mib(), 1),
        "step_mib": round(_vmhwm_mib() - base, 1),
    }


def _warm(_: int) -> int:
    import skimage.segmentation  # noqa: F401

    import pipeline.objects.segments
    import pipeline.objects.zonal  # noqa: F401

    time.sleep(0.2)  # every worker gets one
    return os.getpid()


def measure(
    size: int,
    features: int,
    chunk: int,
    workers: int,
    method: str,
    segment_size: int,
    halo: int,
    work: Path,
    segment_features: int | None = None,
    statistics: tuple[str, ...] = ("mean", "std"),
) -> dict[str, Any]:
    """``segment_features``: segment on the first that many features (all by default), sum
    all of them; ``statistics``: the table's (``objects.statistics``)."""
    from pipeline.model import Window
    from pipeline.objects.segments import ChunkSegments, core_ids, neighbours, stitch
    from pipeline.objects.zonal import percentile_of

    work.mkdir(parents=True, exist_ok=True)
    data = str(generate(work / "stack.npy", size, features))
    windows = _windows(size, chunk)
    channels = min(segment_features or features, features)
    params = {
        "method": method,
        "size": segment_size,
        "compactness": 0.1,
        "halo": halo,
        "channels": channels,
    }
    megapixels = size * size / 1e6
    out: dict[str, Any] = {
        "size": size,
        "features": features,
        "segment_features": channels,
        "chunk": chunk,
        "workers": workers,
        "method": method,
        "segment_size": segment_size,
        "halo": halo,
        "statistics": list(statistics),
    }
    keep_values = any(percentile_of(s) is not None for s in statistics)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_warm, range(workers)))
        started = time.perf_counter()
        parts = [str(work / f"seg-{i}.npz") for i in range(len(windows))]
        done = list(
            pool.map(
                _segment_task, [(data, w, params, p) for w, p in zip(windows, parts, strict=True)]
            )
        )
        segment_s = time.perf_counter() - started

        def load(i: int) -> ChunkSegments:
            with np.load(parts[i]) as z:
                return ChunkSegments(
                    Window(*windows[i]),
                    Window(*(int(v) for v in z["outer"])),
                    z["labels"],
                    z["anchors"],
                )

        started = time.perf_counter()
        ids = stitch(len(windows), load, neighbours([Window(*w) for w in windows]))
        grid = np.lib.format.open_memmap(
            work / "ids.npy", mode="w+", dtype=np.int64, shape=(size, size)
        )
        for i, (r, c, h, w) in enumerate(windows):
            grid[r : r + h, c : c + w] = core_ids(load(i), ids[i])
        grid.flush()
        stitch_s = time.perf_counter() - started
        segments = int(np.unique(grid[grid > 0]).size)
        started = time.perf_counter()
        zonal_parts = [str(work / f"zonal-{i}.npz") for i in range(len(windows))]
        zonal = list(
            pool.map(
                _zonal_task,
                [
                    (data, w, str(work / "ids.npy"), p, keep_values)
                    for w, p in zip(windows, zonal_parts, strict=True)
                ],
            )
        )
        zonal_s = time.perf_counter() - started
    part_mib = sum(Path(p).stat().st_size for p in zonal_parts) / 2**20
    del grid
    driver = []
    for way in ("whole", "streamed"):  # each in a fresh process: its own peak
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as one:
            task = (way, windows, zonal_parts, size, str(work / f"driver-{way}"), statistics)
            driver.append(one.submit(_driver_task, task).result())

    def peaks(tasks: list[dict[str, Any]]) -> list[float]:
        by: dict[int, float] = {}
        for t in tasks:
            by[t["pid"]] = max(by.get(t["pid"], 0.0), t["peak_mib"])
        return sorted(round(v, 1) for v in by.values())

    out["segments"] = segments
    out["segmentation"] = {
        "wall_s": round(segment_s, 2),
        "cpu_s": round(sum(t["cpu"] for t in done), 2),
        "mpx_per_s": round(megapixels / segment_s, 3),
        "mpx_per_cpu_s": round(megapixels / sum(t["cpu"] for t in done), 3),
        "peak_mib_per_worker": peaks(done),
    }
    out["stitching"] = {"wall_s": round(stitch_s, 2), "mpx_per_s": round(megapixels / stitch_s, 3)}
    out["zonal"] = {
        "wall_s": round(zonal_s, 2),
        "cpu_s": round(sum(t["cpu"] for t in zonal), 2),
        "mpx_per_s": round(megapixels / zonal_s, 3),
        "mpx_per_cpu_s": round(megapixels / max(sum(t["cpu"] for t in zonal), 1e-9), 3),
        "peak_mib_per_worker": peaks(zonal),
        "parts_mib": round(part_mib, 1),
    }
    out["driver"] = driver
    return out


def report(figures: dict[str, Any]) -> str:
    f = figures
    head = (
        f"Objects: {f['size']} x {f['size']} px, {f['features']} features (segmented on "
        f"{f.get('segment_features', f['features'])}), chunks of {f['chunk']} px, "
        f"halo {f['halo']}, {f['method']} (segments of ~{f['segment_size']} px: "
        f"{f['segments']:,} found), {f['workers']} workers x 1 thread, statistics "
        f"{','.join(f.get('statistics', ['mean', 'std']))}"
        + (f", zonal parts {f['zonal']['parts_mib']} MiB" if "parts_mib" in f["zonal"] else "")
    )
    rows = [
        "| step | wall s | CPU s | Mpx/s (wall) | Mpx per CPU s | peak MiB per worker |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("segmentation", "zonal"):
        s = f[name]
        rows.append(
            f"| {name} | {s['wall_s']} | {s['cpu_s']} | {s['mpx_per_s']} | {s['mpx_per_cpu_s']} | "
            + ", ".join(str(p) for p in s["peak_mib_per_worker"])
            + " |"
        )
    rows.append(
        f"| stitching (driver) | {f['stitching']['wall_s']} | - | "
        f"{f['stitching']['mpx_per_s']} | - | - |"
    )
    driver = [
        "",
        "Driver: the segment table (the statistics per feature, Parquet) and the polygons "
        "(GeoPackage)",
        "",
        "| way | wall s | of which the table | peak MiB | of which the step (peak less imports) |",
        "|---|---|---|---|---|",
        *(
            f"| {d['way']} | {d['wall_s']} | {d.get('table_s', '-')} | {d['peak_mib']} | "
            f"{d['step_mib']} |"
            for d in f.get("driver", [])
        ),
    ]
    return "\n".join([head, *rows, *(driver if f.get("driver") else [])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.objects",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--features", type=int, default=12)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--method", choices=("slic", "felzenszwalb"), default="slic")
    parser.add_argument("--segment-size", type=int, default=100)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--segment-features", type=int, help="segment on the first N features")
    parser.add_argument(
        "--statistics",
        default="mean,std",
        help="comma-separated, as objects.statistics (mean, std, p<q>)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sitsflow-bench-objects-"))
    try:
        figures = measure(
            args.size,
            args.features,
            args.chunk,
            args.workers,
            args.method,
            args.segment_size,
            args.halo,
            work,
            args.segment_features,
            tuple(args.statistics.split(",")),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["load_average"] = round(os.getloadavg()[0], 2)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
