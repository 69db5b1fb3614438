"""Post-processing benchmark: smoothing, regularization and vectorization chunk by chunk (bounded
memory) against GDAL's sieve and polygonize on the whole array in memory, in one run.

    python -m bench.postprocess                   # 2048 x 2048 px, 7 classes, chunks of 512
    python -m bench.postprocess --size 1024 --chunk 256 --mmu 50 --json out.json

Data (seeded): 7 smooth random fields (Gaussian-filtered noise) plus per-pixel noise, turned
into class probabilities by a softmax and stored as the map store holds them (uint8 percent,
Zarr v3, chunks of ``--chunk`` px), with the raw labels (arg max) and confidence.

Every path runs in a fresh process (spawned), one thread, reading its inputs from the Zarr
store; the in-memory paths load whole arrays first (not timed, but in their peak memory):

* smoothing: ``pipeline.postprocess.smooth`` chunk by chunk with halos (labels + confidence
  written back to Zarr) against the same kernel on the whole array (no GDAL equivalent); the
  labels must be identical.
* regularization (``--mmu`` px, 4-connectivity): chunk by chunk with halos against
  ``rasterio.features.sieve`` on the whole array (GDAL merges into the largest neighbour and
  iterates, sitsflow takes the majority of the surrounding pixels in one pass: the pixels where
  they differ are counted, not an error) and against sitsflow's own whole-array pass (must be
  identical).
* vectorization of the regularized map (4-connectivity, as the sieve): chunks polygonized and
  stitched one row of chunks at a time (``pipeline.postprocess.stream``), with statistics
  (confidence, shares of raw classes), written as GeoParquet (the file write is timed), against
  ``rasterio.features.shapes`` on the whole array (GeoJSON-like dicts, no statistics); the
  chunked polygons must equal a whole-array pass (count, areas, classes).

Peak memory is each process's peak resident set (VmHWM), imports included; "above imports"
subtracts the resident set measured after imports and before any data was read. Ratios are
chunked seconds over in-memory GDAL seconds (CPU seconds of one thread; lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = (
    (1, "forest"),
    (2, "water"),
    (3, "urban"),
    (4, "annual crops"),
    (5, "grassland"),
    (6, "shrubland"),
    (7, "bare soil"),
)
CODES = np.array([c for c, _ in CLASSES])
NODATA = 0
CONNECTIVITY = 4  # of the regions: the sieves' (sitsflow's, GDAL's) and the polygons'
# (4: each region one simple polygon, as GDAL traces them; 8 is supported, as MultiPolygons of
# the 4-connected pieces, and costs GDAL 13x more polygons to trace on this map)


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(folder: Path, size: int, chunk: int, seed: int = 0) -> Path:
    """The synthetic map store: probability_<code> (uint8 %), label, confidence."""
    import zarr
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    k = len(CODES)
    fields = np.empty((k, size, size), dtype=np.float32)
    for i in range(k):
        fields[i] = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 6)
    fields *= 40.0
    fields += rng.standard_normal(fields.shape).astype(np.float32) * 0.8
    fields -= fields.max(axis=0, keepdims=True)
    np.exp(fields, out=fields)
    fields /= fields.sum(axis=0, keepdims=True)
    percent = np.round(fields * 100).astype(np.uint8)
    del fields
    labels = CODES[percent.argmax(axis=0)].astype(np.uint8)
    confidence = percent.max(axis=0)
    corner = slice(0, size // 50)  # a no-data corner
    percent[:, corner, corner] = 255
    labels[corner, corner] = NODATA
    confidence[corner, corner] = 255
    store = folder / "map.zarr"
    group = zarr.open_group(store, mode="w", zarr_format=3)
    for name, data, fill in [("label", labels, NODATA), ("confidence", confidence, 255)] + [
        (f"probability_{c}", percent[i], 255) for i, c in enumerate(CODES)
    ]:
        array = group.create_array(
            name, shape=data.shape, chunks=(chunk, chunk), dtype=data.dtype, fill_value=fill
        )
        array[:] = data
    return store


# --- measurements (each in a fresh process) -------------------------------------------------------


CACHED_CHUNKS = 16  # decoded chunks a chunked path keeps per array (4 MiB of uint8 at 512 px)
IO_CPU = [0.0]  # CPU seconds of Zarr reads and writes in this process (chunked paths)


def _timed(function: Any) -> Any:
    def call(*args: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args)
        finally:
            IO_CPU[0] += time.process_time() - started

    return call


def _label_reader(array: Any) -> Any:
    """Windows of a Zarr map through a cache of a few decoded chunks (``cached_reader``)."""
    from pipeline.postprocess.blocks import cached_reader

    return _timed(cached_reader(array, array.chunks, CACHED_CHUNKS))


def _probability_reader(group: Any) -> Any:
    from pipeline.postprocess.blocks import cached_reader
    from pipeline.postprocess.smooth import percent_to_probability

    readers = [
        cached_reader(a, a.chunks, CACHED_CHUNKS)
        for a in (group[f"probability_{c}"] for c in CODES)
    ]

    @_timed
    def read(window: Any) -> np.ndarray:
        return np.stack([r(window) for r in readers])

    return lambda window: percent_to_probability(read(window))


def _write(array: Any, window: Any, values: np.ndarray) -> None:
    _timed(array.__setitem__)(window.slices, values)


def _output(group: Any, name: str, like: Any, chunk: int) -> Any:
    return group.create_array(
        name,
        shape=like.shape,
        chunks=(chunk, chunk),
        dtype=like.dtype,
        fill_value=like.fill_value,
        overwrite=True,
    )


def _measure(path: str, store: str, chunk: int, mmu: int) -> dict[str, Any]:
    import zarr

    from pipeline.model import GridSpec
    from pipeline.postprocess import regularize as reg
    from pipeline.postprocess import smooth as sm
    from pipeline.postprocess import vectorize as vec

    # compile (or load from numba's cache) every kernel before the clock starts
    tiny = np.full((len(CODES), 8, 8), 1 / len(CODES))
    sm.smooth(tiny, sm.SmoothingConfig())
    reg.regularize(np.ones((8, 8), np.uint8), reg.RegularizationConfig(3), NODATA, CODES)
    vec.polygonize(
        np.ones((8, 8), np.uint8), GridSpec("EPSG:32631", (1, 0, 0, 0, -1, 0), 8, 8), CODES, NODATA
    )
    import geopandas  # noqa: F401  (to_frame's import, not timed)
    import pyarrow.parquet  # noqa: F401  (the streamed writer's, not timed)
    import rasterio.features  # noqa: F401

    base = _rss_mib("VmRSS")
    group = zarr.open_group(store, mode="r+")
    shape = group["label"].shape
    grid = GridSpec("EPSG:32631", (10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0), *shape[::-1])
    windows = grid.chunks(chunk)
    smoothing = sm.SmoothingConfig()  # sits' defaults: window 7, fraction 0.5, smoothness 10
    regularization = reg.RegularizationConfig(mmu=mmu, connectivity=CONNECTIVITY)
    out: dict[str, Any] = {"path": path}
    started, cpu = time.perf_counter(), time.process_time()
    if path == "smooth-chunked":
        read = _probability_reader(group)
        labels_out = _output(group, "smooth_label", group["label"], chunk)
        for w in windows:
            labels, _ = sm.labels_and_confidence(
                sm.smooth_window(read, shape, w, smoothing), CODES, NODATA
            )
            _write(labels_out, w, labels)
    elif path == "smooth-whole":
        p = _probability_reader(group)(grid.chunks(max(shape))[0])
        started, cpu = time.perf_counter(), time.process_time()
        IO_CPU[0] = 0.0  # the load is not timed
        labels, _ = sm.labels_and_confidence(sm.smooth(p, smoothing), CODES, NODATA)
        out["digest"] = labels.tobytes() == np.asarray(group["smooth_label"][:]).tobytes()
    elif path == "regularize-chunked":
        read = _label_reader(group["label"])
        reg_out = _output(group, "regular_label", group["label"], chunk)
        for w in windows:
            result = reg.regularize_window(read, shape, w, regularization, NODATA, CODES)
            _write(reg_out, w, result)
    elif path == "regularize-whole":
        labels = np.asarray(group["label"][:])
        started, cpu = time.perf_counter(), time.process_time()
        IO_CPU[0] = 0.0  # the load is not timed
        result = reg.regularize(labels, regularization, NODATA, CODES)
        out["digest"] = result.tobytes() == np.asarray(group["regular_label"][:]).tobytes()
    elif path == "sieve-gdal":
        from rasterio.features import sieve

        labels = np.asarray(group["label"][:])
        started, cpu = time.perf_counter(), time.process_time()
        IO_CPU[0] = 0.0  # the load is not timed
        gdal = sieve(labels, size=mmu, connectivity=CONNECTIVITY, mask=labels != NODATA)
        ours = np.asarray(group["regular_label"][:])
        out["differ_from_sitsflow"] = float((gdal != ours).mean())
    elif path == "vectorize-chunked":
        from pipeline.postprocess.stream import Columns, write_streamed

        get = _timed(lambda name, rows, cols: np.asarray(group[name][rows, cols]))

        def band(row: int) -> Any:
            def load() -> list[Any]:
                parts = []
                for w in windows:
                    if w.row_off != row:
                        continue
                    rows, cols = w.slices
                    parts.append(
                        vec.polygonize_chunk(
                            get("regular_label", rows, cols),
                            w,
                            grid,
                            CODES,
                            NODATA,
                            connectivity=CONNECTIVITY,
                            confidence=get("confidence", rows, cols),
                            raw=get("label", rows, cols),
                            raw_codes=CODES,
                        )
                    )
                return parts

            return load

        target = Path(store).parent / "polygons.parquet"
        write_streamed(
            [band(r) for r in sorted({w.row_off for w in windows})],
            grid,
            CONNECTIVITY,
            Columns(dict(CLASSES), tuple(CODES)),
            parquet=target,
        )
        out["seconds"] = time.perf_counter() - started
        out["cpu_seconds"] = time.process_time() - cpu
        import pyarrow.parquet as pq
        import shapely

        # read back after the clock, batch by batch (the peak stays the streamed one)
        out.update(polygons=0, pixels_sum=0, area_sum=0.0, valid=True)
        for batch in pq.ParquetFile(target).iter_batches(4096, columns=["pixels", "geometry"]):
            shapes_ = shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False))
            out["polygons"] += len(batch)
            out["pixels_sum"] += int(batch.column("pixels").to_numpy().sum())
            out["area_sum"] += float(shapely.area(shapes_).sum())
            out["valid"] = out["valid"] and bool(shapely.is_valid(shapes_).all())
    elif path == "vectorize-whole":
        labels = np.asarray(group["regular_label"][:])
        started, cpu = time.perf_counter(), time.process_time()
        IO_CPU[0] = 0.0  # the load is not timed
        frame = vec.to_frame(
            vec.polygonize(labels, grid, CODES, NODATA, connectivity=CONNECTIVITY),
            grid,
            dict(CLASSES),
        )
        out["polygons"] = len(frame)
        out["pixels_sum"] = int(frame["pixels"].sum())
    elif path == "shapes-gdal":
        from rasterio.features import shapes

        labels = np.asarray(group["regular_label"][:])
        started, cpu = time.perf_counter(), time.process_time()
        IO_CPU[0] = 0.0  # the load is not timed
        polygons = list(
            shapes(labels, mask=labels != NODATA, connectivity=CONNECTIVITY, transform=grid.affine)
        )
        out["polygons"] = len(polygons)
    else:
        raise ValueError(path)
    out.setdefault("seconds", time.perf_counter() - started)
    out.setdefault("cpu_seconds", time.process_time() - cpu)
    out["io_cpu_seconds"] = IO_CPU[0]
    out["compute_cpu_seconds"] = out["cpu_seconds"] - IO_CPU[0]
    out["peak_mib"] = _rss_mib("VmHWM")
    out["above_imports_mib"] = out["peak_mib"] - base
    return out


def run_path(path: str, store: Path, chunk: int, mmu: int) -> dict[str, Any]:
    """One measurement in a fresh, single-threaded process."""
    os.environ.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", GDAL_NUM_THREADS="1")
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure, path, str(store), chunk, mmu).result()


PATHS = (
    "smooth-chunked",
    "smooth-whole",
    "regularize-chunked",
    "regularize-whole",
    "sieve-gdal",
    "vectorize-chunked",
    "vectorize-whole",
    "shapes-gdal",
)


SECTIONS = {
    "smooth": ("smooth-chunked", "smooth-whole"),
    "regularize": ("regularize-chunked", "regularize-whole", "sieve-gdal"),
    "vectorize": ("vectorize-chunked", "vectorize-whole", "shapes-gdal"),
}


def measure(
    size: int, chunk: int, mmu: int, work: Path, sections: tuple[str, ...] = tuple(SECTIONS)
) -> dict[str, Any]:
    started = time.perf_counter()
    store = generate(work, size, chunk)
    figures: dict[str, Any] = {
        "size": size,
        "classes": len(CODES),
        "chunk": chunk,
        "mmu": mmu,
        "generate_s": time.perf_counter() - started,
        "paths": {},
    }
    for path in PATHS:
        if not any(path in SECTIONS[name] for name in sections):
            continue
        if path.startswith("vectorize") and "regularize" not in sections:
            run_path("regularize-chunked", store, chunk, mmu)  # the map it polygonizes
        result = run_path(path, store, chunk, mmu)
        figures["paths"][path] = result
        print(
            f"  {path:20s} {result['seconds']:7.2f} s  {result['peak_mib']:7.0f} MiB peak "
            f"({result['above_imports_mib']:.0f} above imports)",
            flush=True,
        )
    p = figures["paths"]
    ratios, identical = {}, {}
    if "regularize" in sections:
        ratios["regularize_chunked_over_gdal_sieve"] = (
            p["regularize-chunked"]["cpu_seconds"] / p["sieve-gdal"]["cpu_seconds"]
        )
        ratios["regularize_chunked_compute_over_gdal_sieve"] = (
            p["regularize-chunked"]["compute_cpu_seconds"] / p["sieve-gdal"]["cpu_seconds"]
        )
        identical["regularization"] = p["regularize-whole"]["digest"]
    if "vectorize" in sections:
        ratios["vectorize_chunked_over_gdal_shapes"] = (
            p["vectorize-chunked"]["cpu_seconds"] / p["shapes-gdal"]["cpu_seconds"]
        )
        ratios["vectorize_chunked_compute_over_gdal_shapes"] = (
            p["vectorize-chunked"]["compute_cpu_seconds"] / p["shapes-gdal"]["cpu_seconds"]
        )
        chunked, whole = p["vectorize-chunked"], p["vectorize-whole"]
        identical["vectorization"] = (chunked["polygons"], chunked["pixels_sum"]) == (
            whole["polygons"],
            whole["pixels_sum"],
        )
    if "smooth" in sections:
        ratios["smooth_chunked_over_whole"] = (
            p["smooth-chunked"]["cpu_seconds"] / p["smooth-whole"]["cpu_seconds"]
        )
        identical["smoothing"] = p["smooth-whole"]["digest"]
    figures["ratios"], figures["identical"] = ratios, identical
    return figures


def report(f: dict[str, Any]) -> str:
    lines = [
        f"Post-processing: {f['size']} x {f['size']} px, {f['classes']} classes, chunks of "
        f"{f['chunk']} px, MMU {f['mmu']} px, one thread per path",
        "| path | wall s | CPU s | of which Zarr I/O | peak MiB | above imports MiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in f["paths"].items():
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['io_cpu_seconds']:.2f} | "
            f"{r['peak_mib']:.0f} | {r['above_imports_mib']:.0f} |"
        )
    ratios, paths = f["ratios"], f["paths"]
    if "regularize_chunked_over_gdal_sieve" in ratios:
        lines.append(
            f"regularization chunked / GDAL sieve in memory: "
            f"{ratios['regularize_chunked_over_gdal_sieve']:.2f}x CPU, "
            f"{ratios['regularize_chunked_compute_over_gdal_sieve']:.2f}x without Zarr I/O "
            f"(target <= 2); pixels "
            f"where GDAL's rule differs: {paths['sieve-gdal']['differ_from_sitsflow']:.2%}"
        )
    if "vectorize_chunked_over_gdal_shapes" in ratios:
        vec = paths["vectorize-chunked"]
        lines.append(
            f"vectorization chunked (+ statistics) / GDAL shapes in memory: "
            f"{ratios['vectorize_chunked_over_gdal_shapes']:.2f}x CPU, "
            f"{ratios['vectorize_chunked_compute_over_gdal_shapes']:.2f}x without Zarr I/O "
            f"(target <= 2); "
            f"{vec['polygons']} polygons, all valid: {vec['valid']}, "
            f"area {vec['area_sum']:.0f} m2 for {vec['pixels_sum']} px"
        )
    if "smooth_chunked_over_whole" in ratios:
        lines.append(
            f"smoothing chunked / whole in memory: {ratios['smooth_chunked_over_whole']:.2f}x CPU"
        )
    lines.append(f"chunked == whole: {f['identical']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.postprocess",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--mmu", type=int, default=50, help="minimum mapping unit (px)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="smooth,regularize,vectorize")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--work", type=Path, help="work folder, kept (default: temporary)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sitsflow-bench-post-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            parser.error(f"unknown section(s) {unknown}: choose from {', '.join(SECTIONS)}")
        figures = measure(args.size, args.chunk, args.mmu, work, sections)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if all(figures["identical"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
