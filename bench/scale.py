"""Scale: planning a full Sentinel-2 tile without reading a pixel, and 1, 4, 16 tiles run.

    python -m bench.chain --only scale           # 2048 px data in tiles of 512 px
    python -m bench.chain --only scale --quick   # 256 px data in tiles of 64 px

1. **Planning one full tile**: tile 31TCJ (10,980 x 10,980 px at 10 m), two years, Sentinel-2
   L2A (the sen2cor profile: ten bands and the SCL, an acquisition every 5 days) and Sentinel-1
   (VV and VH, ascending and descending passes every 6 days), listed as STAC items in an item
   collection whose assets point at files that do not exist: planning reads item metadata only
   (``check_files: never``), so a pixel read would fail. ``plan_run`` runs in this process under
   tracemalloc: its wall time, the Python memory it allocated at its peak, the growth of the
   process's resident set, the units it planned per stage and the tasks in flight at once (the
   executor's bound: ``compute.max_units_in_flight``, by default two per worker thread).
2. **1, 4 and 16 tiles**: the whole-chain tile (``bench.chain``'s data) cut into a user grid of
   ``size / 4`` px tiles, ``sitsflow run`` over 1, 2 x 2 and 4 x 4 of them (the fused, compiled
   variant where the build has it): wall and CPU seconds, the units' own seconds (the stages'
   time, without the session's fixed costs), peak memory per worker, tasks per tile, and the
   ratios of 16 tiles to 16 times one tile (goal: wall within 1.05x; memory per worker flat).
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import chain
from bench import cube as cube_bench

MIB = 2**20
TILE = "31TCJ"
TILE_PX = 10_980
S2_BANDS = (
    ("B02", 10),
    ("B03", 10),
    ("B04", 10),
    ("B05", 20),
    ("B06", 20),
    ("B07", 20),
    ("B08", 10),
    ("B8A", 20),
    ("B11", 20),
    ("B12", 20),
    ("SCL", 20),
)
YEARS = (date(2021, 1, 1), date(2022, 12, 31))


def _asset(href: str, resolution: float) -> dict[str, Any]:
    n = round(TILE_PX * 10 / resolution)
    return {
        "href": href,
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"],
        "proj:code": f"EPSG:{cube_bench.EPSG}",
        "proj:shape": [n, n],
        "proj:transform": [resolution, 0.0, cube_bench.LEFT, 0.0, -resolution, cube_bench.TOP],
    }


def full_tile_items(folder: Path) -> list[dict[str, Any]]:
    """Two years of S2 (every 5 days) and S1 (ascending and descending, every 6 days) items of
    tile 31TCJ, their assets under ``folder/absent`` (never written)."""

    left, top = cube_bench.LEFT, cube_bench.TOP
    right, bottom = left + TILE_PX * 10, top - TILE_PX * 10
    geometry, bbox = chain.footprint(left, bottom, right, top)
    absent = folder / "absent"
    items = []

    def item(
        item_id: str, when: datetime, collection: str, props: dict[str, Any], assets: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": ["https://stac-extensions.github.io/projection/v2.0.0/schema.json"],
            "id": item_id,
            "collection": collection,
            "geometry": geometry,
            "bbox": bbox,
            "properties": {
                "datetime": when.isoformat().replace("+00:00", "Z"),
                "proj:code": f"EPSG:{cube_bench.EPSG}",
                **props,
            },
            "assets": assets,
            "links": [],
        }

    day = YEARS[0]
    while day <= YEARS[1]:
        when = datetime(day.year, day.month, day.day, 10, 56, tzinfo=UTC)
        stem = f"S2B_{TILE}_{day:%Y%m%d}_0_L2A"
        assets = {b: _asset(str(absent / stem / f"{b}.tif"), r) for b, r in S2_BANDS}
        props = {
            "grid:code": f"MGRS-{TILE}",
            "eo:cloud_cover": 20.0,
            "s2:processing_baseline": "05.00",
            "earthsearch:boa_offset_applied": True,
        }
        items.append(item(stem, when, "sentinel-2-l2a", props, assets))
        day += timedelta(days=5)
    for state, hour, shift in (("ascending", 17, 0), ("descending", 5, 3)):
        day = YEARS[0] + timedelta(days=shift)
        while day <= YEARS[1]:
            when = datetime(day.year, day.month, day.day, hour, 40, tzinfo=UTC)
            stem = f"s1a_{TILE}_{state[:3]}_{day:%Y%m%d}"
            assets = {p: _asset(str(absent / f"{stem}_{p}.tif"), 10) for p in ("vv", "vh")}
            props = {
                "grid:code": f"MGRS-{TILE}",
                "sat:orbit_state": state,
                "sar:polarizations": ["VV", "VH"],
            }
            items.append(item(stem, when, "sentinel-1-rtc", props, assets))
            day += timedelta(days=6)
    return items


def full_tile_manifest(folder: Path, points: int) -> dict[str, Any]:
    """The manifest of a two-year S2 + S1 run over the whole tile (its items written as an item
    collection, ``points`` reference points over the tile)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = full_tile_items(folder)
    collection = folder / "items.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    reference = chain.write_points(TILE_PX, points, folder / "points.gpkg")
    catalog = {"kind": "item_collection", "url": str(collection), "check_files": "never"}
    return {
        "apiVersion": "sitsflow.dev/v1alpha1",
        "kind": "SitsRun",
        "metadata": {"name": "bench-plan-tile"},
        "spec": {
            "period": {"start": str(YEARS[0]), "end": str(YEARS[1])},
            "sensors": [
                {
                    "name": "s2",
                    "profile": "sentinel2-l2a-sen2cor",
                    "catalog": {**catalog, "collections": ["sentinel-2-l2a"]},
                },
                {
                    "name": "s1",
                    "profile": "sentinel1",
                    "catalog": {**catalog, "collections": ["sentinel-1-rtc"]},
                },
            ],
            "area": {"grid": "mgrs", "tiles": [TILE]},
            "reference": {"path": str(reference), "label_field": "code"},
            "outputs": {"store": str(folder / "store")},
            "compute": {
                "workers": 2,
                "threads_per_worker": 1,
                "memory_limit": "16GiB",
                "chunk_size": 512,
            },
        },
    }


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plan_full_tile(folder: Path, points: int = 700) -> dict[str, Any]:
    """Plan the full-tile run in this process: time, memory, units, tasks in flight."""
    import yaml

    from pipeline.manifest import parse_manifest
    from pipeline.manifest.to_config import resolve
    from pipeline.run.plan import plan_run

    shutil.rmtree(folder, ignore_errors=True)
    document = full_tile_manifest(folder, points)
    items = json.loads((folder / "items.json").read_text())["features"]
    counts = {
        c: sum(1 for i in items if i["collection"] == c)
        for c in ("sentinel-2-l2a", "sentinel-1-rtc")
    }
    text = yaml.safe_dump(document)
    import pipeline.stages  # noqa: F401  (imports are not planning)

    # Pass 1, timed: the resident set's growth and peak (VmHWM, reset first where Linux allows).
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    rss = _status_mib("VmRSS")
    started = time.perf_counter()
    config = resolve(parse_manifest(text, base_dir=folder))
    plan = plan_run(config)
    seconds = time.perf_counter() - started
    peak_rss = _status_mib("VmHWM")
    # Pass 2, under tracemalloc (slower): the Python allocations at their peak.
    tracemalloc.start()
    plan_run(resolve(parse_manifest(text, base_dir=folder)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    units = {name: len(u) for name, u in plan.units.items() if u}
    threads = config.compute.workers * config.compute.threads_per_worker
    in_flight = config.compute.max_units_in_flight or max(2, 2 * threads)
    estimate = plan.estimate
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "tile": TILE,
        "pixels": TILE_PX * TILE_PX,
        "items": counts,
        "acquisitions": estimate.get("acquisitions"),
        "features": estimate.get("features"),
        "chunks": estimate.get("chunks"),
        "plan_seconds": seconds,
        "tracemalloc_peak_mib": peak / MIB,
        "rss_before_mib": rss,
        "rss_peak_mib": peak_rss,
        "units": units,
        "tasks": sum(units.values()),
        "in_flight": in_flight,
    }


def _grid(size: int, side: int, tile: int) -> dict[str, Any]:
    extent = side * tile * 10.0
    left, top = cube_bench.LEFT, cube_bench.TOP
    return {
        "grid": "user",
        "crs": f"EPSG:{cube_bench.EPSG}",
        "resolution": 10.0,
        "tile_size": tile,
        "origin": [left, top],
        "bbox": [left, top - extent, left + extent, top],
    }


def run_tiles(work: Path, size: int, dates: int, points: int, trees: int) -> dict[str, Any]:
    """1, 4 and 16 tiles of ``size / 4`` px of the whole-chain tile, one run each."""
    tile = size // 4
    inputs = chain.make_inputs(work, size, dates, points)
    folder = work / "scale-tiles"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = chain.manifest(inputs, folder / "unused-store", trees, min(tile, 512))
    # One tile holds a sixteenth of the points: keep every class, however few its pixels.
    base["spec"]["sampling"]["min_pixels_per_class"] = 1
    overrides = chain.variant_overrides(base, folder)
    variant = next(n for n in chain.HEADLINE if isinstance(overrides[n], dict))
    override = overrides[variant]
    assert isinstance(override, dict)
    runs = []
    for side in (1, 2, 4):
        document = chain._merge(
            chain._merge(base, override), {"spec": {"area": _grid(size, side, tile)}}
        )
        run = chain.run_sitsflow(document, folder, f"{side * side}-tiles")
        units = json.loads((Path(run["store"]) / "run.json").read_text())["units"]
        counts = {name: u["total"] for name, u in units.items()}
        tiles = run["estimate"]["tiles"]
        if tiles != side * side:
            raise SystemExit(f"asked for {side * side} tiles, the run made {tiles}")
        runs.append(
            {
                "tiles": tiles,
                "pixels": run["estimate"]["pixels"],
                "wall_s": run["seconds"],
                "cpu_s": run["cpu_seconds"],
                "units_s": sum(run["stage_seconds"].values()),
                "peak_mib": run["peak_mib"],
                "tasks": sum(counts.values()),
                "tasks_per_tile": sum(counts.values()) / tiles,
                "phases": run["phases"],
            }
        )
        print(
            f"  scale {tiles:2d} tile(s): {run['seconds']:6.1f} s wall, "
            f"{run['cpu_seconds']:6.1f} CPU s",
            flush=True,
        )
        shutil.rmtree(run["store"], ignore_errors=True)
    one, big = runs[0], runs[-1]
    return {
        "tile_size": tile,
        "variant": variant,
        "runs": runs,
        "wall_16_over_16x1": big["wall_s"] / (16 * one["wall_s"]),
        "cpu_16_over_16x1": big["cpu_s"] / (16 * one["cpu_s"]),
        "units_16_over_16x1": big["units_s"] / (16 * one["units_s"]),
        "units_16_over_4x4": big["units_s"] / (4 * runs[1]["units_s"]),
        "memory_16_over_1": big["peak_mib"] / one["peak_mib"],
    }


def measure(
    work: Path, size: int, dates: int, *, points: int, trees: int, quick: bool = False
) -> dict[str, Any]:
    planned = plan_full_tile(work / "scale-plan", points)
    print(
        f"  planned tile {TILE}: {planned['plan_seconds']:.1f} s, {planned['tasks']} units",
        flush=True,
    )
    return {"plan": planned, "tiles": run_tiles(work, size, dates, points, trees), "quick": quick}


def report(figures: dict[str, Any]) -> str:
    p, t = figures["plan"], figures["tiles"]
    lines = [
        f"Planning tile {p['tile']} ({p['pixels'] / 1e6:.1f} M px at 10 m), {YEARS[0]} .. "
        f"{YEARS[1]}, S2 (10 bands + SCL) and S1 (VV, VH, two orbit directions), no pixel read: "
        f"{p['acquisitions']} acquisitions, {p['features']} features, {p['chunks']} chunks",
        f"  planning {p['plan_seconds']:.1f} s; driver memory: resident set "
        f"{p['rss_before_mib']:.0f} MiB before (imports), {p['rss_peak_mib']:.0f} MiB at the "
        f"peak; {p['tracemalloc_peak_mib']:.0f} MiB of Python allocations at the peak "
        "(tracemalloc, a second pass)",
        f"  {p['tasks']} units ("
        + ", ".join(f"{k} {v}" for k, v in p["units"].items())
        + f"); tasks in flight at once: {p['in_flight']}",
        "",
        f"Tiles of {t['tile_size']} px ({t['variant']}), one run each:",
        "| tiles | pixels | wall s | CPU s | units s | peak MiB/worker | tasks per tile |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in t["runs"]:
        lines.append(
            f"| {r['tiles']} | {r['pixels']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['units_s']:.1f} | {r['peak_mib']:.0f} | {r['tasks_per_tile']:.2f} |"
        )
    lines += [
        f"16 tiles / (16 x 1 tile): wall {t['wall_16_over_16x1']:.2f} (goal <= 1.05), CPU "
        f"{t['cpu_16_over_16x1']:.2f}, units' seconds {t['units_16_over_16x1']:.2f}; "
        f"16 tiles / (4 x 4 tiles), units' seconds {t['units_16_over_4x4']:.2f}; "
        f"peak memory per worker 16 tiles / 1 tile {t['memory_16_over_1']:.2f}",
    ]
    return "\n".join(lines)
