"""Objects benchmark: segmentation (per chunk with a halo, then stitched) and zonal statistics per
megapixel, with the peak memory of each worker.

    python -m bench.objects                          # 1024 x 1024 px, 12 features, chunks of 256
    python -m bench.objects --size 2048 --method felzenszwalb --json out.json

Data (seeded): ``--features`` smooth random fields (Gaussian-filtered noise) plus per-pixel
noise, float32, as read from a cube (F, h, w). Each chunk is a task of a pool of ``--workers``
spawned processes of one thread (as dask workers would run the stage's units); a task reads its
chunk (and halo) from a shared .npy file (memory-mapped), segments it and saves the result, or
sums its features per segment id. Stitching runs in the parent (two chunks in memory at a time).

Peak memory per worker is each worker process's peak resident set (VmHWM), imports included.
Throughput is megapixels per wall second of the pool (and per CPU second, summed over tasks).
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
    stack = np.load(data, mmap_mode="r")
    started, cpu = time.perf_counter(), time.process_time()

    def read(w: Window) -> np.ndarray:
        return np.asarray(
            stack[:, w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
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


def _zonal_task(args: tuple[str, tuple[int, int, int, int], str]) -> dict[str, Any]:
    from pipeline.objects.zonal import zonal_sums

    data, (r, c, h, w), ids_path = args
    stack = np.load(data, mmap_mode="r")
    ids = np.load(ids_path, mmap_mode="r")
    started, cpu = time.perf_counter(), time.process_time()
    sums = zonal_sums(
        np.asarray(ids[r : r + h, c : c + w]), np.asarray(stack[:, r : r + h, c : c + w])
    )
    return {
        "pid": os.getpid(),
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "peak_mib": _vmhwm_mib(),
        "sums": sums,
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
) -> dict[str, Any]:
    from pipeline.model import Window
    from pipeline.objects.segments import ChunkSegments, core_ids, neighbours, stitch
    from pipeline.objects.zonal import combine, statistics

    work.mkdir(parents=True, exist_ok=True)
    data = str(generate(work / "stack.npy", size, features))
    windows = _windows(size, chunk)
    params = {"method": method, "size": segment_size, "compactness": 0.1, "halo": halo}
    megapixels = size * size / 1e6
    out: dict[str, Any] = {
        "size": size,
        "features": features,
        "chunk": chunk,
        "workers": workers,
        "method": method,
        "segment_size": segment_size,
        "halo": halo,
    }
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
        zonal = list(pool.map(_zonal_task, [(data, w, str(work / "ids.npy")) for w in windows]))
        total = combine([z.pop("sums") for z in zonal])
        statistics(total)
        zonal_s = time.perf_counter() - started

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
    }
    return out


def report(figures: dict[str, Any]) -> str:
    f = figures
    head = (
        f"Objects: {f['size']} x {f['size']} px, {f['features']} features, chunks of {f['chunk']} "
        f"px, halo {f['halo']}, {f['method']} (segments of ~{f['segment_size']} px: "
        f"{f['segments']:,} found), {f['workers']} workers x 1 thread"
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
    return "\n".join([head, *rows])


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
