"""Resume benchmark: what a run killed half way costs to finish, against a full run.

    python -m bench.resume                 # the Slovenia demo tiled 12 x 12 (1212 x 1200 px)
    python -m bench.resume --factor 4      # quicker; its fixed costs weigh more (see below)
    python -m bench.resume --kill-by time  # kill at half the full run's wall time instead
    python -m bench.resume --json out.json

The workload is real data made bigger: every acquisition of the bundled Slovenia Sentinel-2
catalog (NDVI and cloud mask COGs) and the reference polygons are repeated ``factor x factor``
times side by side on the same UTM grid. Three sessions of ``sitsflow run`` run as separate
processes, each with its own LocalCluster (2 workers of 1 thread):

1. a full run into an empty store: its wall time, and each unit's time from the ledger;
2. a run into another empty store, killed (SIGKILL of the driver and its workers) as soon as
   the units in its ledger add up to ``--kill-at`` (50%) of the full run's unit compute time,
   i.e. half of the work as ``sitsflow status`` sees it (``--kill-by time``: after that share of
   the full run's wall time);
3. ``--resume`` of the killed run.

Printed: the wall time of (3) over the wall time of (1) (what finishing the killed run costs),
the same ratio for compute time (the units' own seconds, without process start, imports and
cluster start-up), the CPU seconds of (1) and (3) (driver and workers), the number of units
finished before the kill that ran again (0 expected), and whether the resumed maps are
byte-identical to the full run's. The verdict (issue 6) is printed last; the exit status is 1
when the wall ratio exceeds ``--max-ratio`` (0.55), a finished unit ran again or the maps
differ.

Also printed: where each session's wall time went (``start``, ``plan``, ``first_unit``,
``units``, ``end``, see ``phases``), in the JSON figures too.

What to expect: every session pays fixed costs F (interpreter and imports, planning, cluster
start-up, the workers' first imports, shutdown: about 16 s at factor 16 on a quiet machine here,
28 s at factor 24, where planning alone is 17 s) on top of its work W. Killed after half of the
work, the resumed session costs F + W/2 (+ the units in flight when it died): its ratio to the
full run is 0.5 + F / (2 (F + W)), below 0.55 once W exceeds 9 F. The chain's stages are cut into
units small enough for that, except training (one unit per model, 15 to 20 % of the compute
here): a kill by work lands before it or well after half way, a kill in the middle of it loses it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import rasterio
import yaml
from shapely.affinity import translate

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "slovenia"
MAX_RATIO = 0.55  # issue 6: finishing a run killed half way costs at most 55 % of a full run


def tile_demo(folder: Path, factor: int) -> Path:
    """Write the demo catalog and reference tiled ``factor x factor``; return the manifest."""
    catalog = pystac.Catalog.from_file(str(DEMO / "catalog" / "catalog.json"))
    out = pystac.Catalog("slovenia-tiled", f"Slovenia demo tiled {factor} x {factor}")
    images = folder / "images"
    images.mkdir(parents=True)
    width = height = 0
    for item in sorted(catalog.get_items(recursive=True), key=lambda i: i.id):
        record = item.to_dict(include_self_link=False, transform_hrefs=False)
        record["links"] = []
        new = pystac.Item.from_dict(record)
        for key, asset in item.assets.items():
            href = asset.get_absolute_href()
            assert href is not None
            with rasterio.open(href) as src:
                data = np.tile(src.read(1), (factor, factor))
                profile = src.profile
                height, width = src.height, src.width
            target = images / f"{item.id}-{key}.tif"
            profile.update(
                driver="GTiff", height=data.shape[0], width=data.shape[1], tiled=True,
                blockxsize=256, blockysize=256, compress="deflate",
            )  # fmt: skip
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(data, 1)
            new.assets[key].href = str(target)
        new.properties["proj:shape"] = [height * factor, width * factor]
        for extra in ("proj:bbox", "proj:geometry", "proj:centroid"):
            new.properties.pop(extra, None)
        out.add_item(new)
    out.normalize_hrefs(str(folder / "catalog"))
    out.save(pystac.CatalogType.SELF_CONTAINED)

    reference = gpd.read_file(DEMO / "reference" / "lulc.gpkg")
    with rasterio.open(
        next(iter(catalog.get_items(recursive=True))).assets["ndvi"].get_absolute_href()
    ) as src:
        step_x, step_y = src.width * src.transform.a, src.height * src.transform.e
    copies = []
    for row in range(factor):
        for col in range(factor):
            part = reference.copy()
            part["geometry"] = part.geometry.apply(
                lambda g, r=row, c=col: translate(g, xoff=c * step_x, yoff=r * step_y)
            )
            copies.append(part)
    tiled = gpd.GeoDataFrame(
        gpd.pd.concat(copies, ignore_index=True), crs=reference.crs, geometry="geometry"
    )
    tiled.to_file(folder / "reference.gpkg", driver="GPKG")

    data = yaml.safe_load((DEMO / "run.yaml").read_text())
    spec = data["spec"]
    spec["sensors"][0]["catalog"]["url"] = str(folder / "catalog" / "catalog.json")
    spec["reference"]["path"] = str(folder / "reference.gpkg")
    spec["model"]["params"] = {"n_estimators": 50}
    spec["sampling"].update(strategy="percentage", fraction=0.1)
    spec["outputs"]["store"] = str(folder / "unused-store")
    spec["compute"].update(chunk_size=64, dashboard_port=0, workers=2, memory_limit="3GiB")
    manifest = folder / "run.yaml"
    manifest.write_text(yaml.safe_dump(data))
    return manifest


def command(manifest: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "--log-format", "json", "run", str(manifest),
            "--store", str(store), *extra]  # fmt: skip


def _ledger(store: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    root = store / "state" / "ledger"
    if root.is_dir():
        for path in root.glob("*/*.json"):
            if path.name.startswith(("store@", ".")):
                continue
            try:
                record = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                continue  # being written
            out[(record["stage"], record["key"])] = record
    return out


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished children of this process and of theirs (the
    run's driver, then its nanny and worker processes, which it waits for on shutdown)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` to the end; its wall seconds and CPU seconds (its whole process tree)."""
    seconds, cpu, _ = run_phased(command, log)
    return seconds, cpu


def run_phased(command: list[str], log: Path) -> tuple[float, float, dict[str, float]]:
    """``run_timed``, and where the session's wall time went (``phases``)."""
    spawned, started, cpu = time.time(), time.perf_counter(), _children_cpu()
    with log.open("wb") as out:
        code = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}); see {log}")
    return seconds, cpu, phases(log, spawned, spawned + seconds)


def phases(log: Path, spawned: float, ended: float) -> dict[str, float]:
    """A session's wall time from its JSON log: ``start`` (interpreter and imports, to the
    ``run.planning`` event), ``plan`` (to ``run.dashboard``: the cluster is up), ``first_unit``
    (to the first unit finished: the workers' imports, and that unit), ``units`` (to the last
    unit finished) and ``end`` (closing the cluster, exiting). Fixed costs, paid whatever is
    left to do: ``start + plan + end``, and most of ``first_unit``."""
    times: dict[str, float] = {}
    units: list[float] = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
            at = datetime.fromisoformat(event["ts"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if event.get("event") == "unit.finished":
            units.append(at)
        elif event.get("event") in ("run.planning", "run.dashboard"):
            times.setdefault(event["event"], at)
    if "run.planning" not in times or "run.dashboard" not in times or not units:
        return {}
    marks = [spawned, times["run.planning"], times["run.dashboard"], units[0], units[-1], ended]
    names = ("start", "plan", "first_unit", "units", "end")
    return {name: round(b - a, 2) for name, a, b in zip(names, marks[:-1], marks[1:], strict=True)}


def _killed(
    command: list[str],
    store: Path,
    weights: dict[Any, float],
    *,
    at: float,
    by: str,
    full_wall: float,
    log: Path,
) -> dict[str, Any]:
    """Run ``command``; SIGKILL its process group once ``at`` of the full run is done: of its
    wall time (``by="time"``) or of its units' compute time (``by="work"``)."""
    total = sum(weights.values())
    started = time.perf_counter()
    done = 0.0
    seen: set[Path] = set()  # ledger files already counted: each poll reads only the new ones
    root = store / "state" / "ledger"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while True:
                elapsed = time.perf_counter() - started
                for path in set(root.glob("*/*.json")) - seen if root.is_dir() else ():
                    if path.name.startswith(("store@", ".")):
                        continue
                    try:
                        record = json.loads(path.read_text())
                    except (json.JSONDecodeError, OSError):
                        continue  # being written: read it at the next poll
                    seen.add(path)
                    done += weights.get((record["stage"], record["key"]), 0.0)
                if by == "time" and elapsed >= at * full_wall:
                    break
                if by == "work" and done >= at * total:
                    break
                if process.poll() is not None:
                    raise SystemExit(f"the run to kill ended first; see {log}")
                time.sleep(0.1)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "work_fraction": done / total, "time_fraction": seconds / full_wall}


def measure(
    factor: int,
    folder: Path,
    *,
    kill_at: float = 0.5,
    kill_by: str = "work",
    echo: bool = True,
) -> dict[str, Any]:
    """Full run, killed run, resumed run of the demo tiled ``factor x factor`` in ``folder``."""

    def say(text: str) -> None:
        if echo:
            print(text, flush=True)

    manifest = tile_demo(folder / "data", factor)
    full_store, killed_store = folder / "full", folder / "killed"
    say(f"workload: demo tiled {factor} x {factor}; runs in {folder}")

    full_wall, full_cpu, full_phases = run_phased(
        command(manifest, full_store), folder / "full.log"
    )
    full = _ledger(full_store)
    weights = {k: float(r["seconds"]) for k, r in full.items()}
    say(
        f"full run: {full_wall:.1f} s wall, {full_cpu:.1f} CPU s, {len(full)} units, "
        f"{sum(weights.values()):.1f} s of unit compute"
    )

    kill = _killed(
        command(manifest, killed_store),
        killed_store,
        weights,
        at=kill_at,
        by=kill_by,
        full_wall=full_wall,
        log=folder / "killed.log",
    )
    before = _ledger(killed_store)
    say(
        f"killed after {kill['seconds']:.1f} s ({kill['time_fraction']:.0%} of the full run's "
        f"wall time), with {kill['work_fraction']:.0%} of its unit compute ({len(before)} "
        "units) in the ledger"
    )

    resumed_wall, resumed_cpu, resumed_phases = run_phased(
        command(manifest, killed_store, "--resume"), folder / "resumed.log"
    )
    after = _ledger(killed_store)
    redone = sorted(k for k, r in before.items() if after[k]["session"] != r["session"])
    resumed_compute = sum(float(r["seconds"]) for k, r in after.items() if k not in before)
    identical = all(
        (full_store / name).read_bytes() == (killed_store / name).read_bytes()
        for name in ("maps/labels.tif", "maps/confidence.tif")
    )
    return {
        "factor": factor,
        "pixels": _pixels(full_store),
        "units": len(full),
        "full_wall_s": round(full_wall, 2),
        "full_cpu_s": round(full_cpu, 2),
        "full_unit_compute_s": round(sum(weights.values()), 2),
        "killed_after_s": round(kill["seconds"], 2),
        "killed_at_work_fraction": round(kill["work_fraction"], 3),
        "killed_at_time_fraction": round(kill["time_fraction"], 3),
        "units_done_at_kill": len(before),
        "resumed_wall_s": round(resumed_wall, 2),
        "resumed_cpu_s": round(resumed_cpu, 2),
        "wall_ratio": round(resumed_wall / full_wall, 3),
        "cpu_ratio": round(resumed_cpu / full_cpu, 3) if full_cpu else None,
        "compute_ratio": round(resumed_compute / sum(weights.values()), 3),
        "units_redone": len(redone),
        "maps_identical": identical,
        "full_phases_s": full_phases,
        "resumed_phases_s": resumed_phases,
        "resumed_fixed_s": _fixed(resumed_phases),
    }


def _fixed(parts: dict[str, float]) -> float | None:
    """The session's wall time outside its units: start, planning and cluster start, end."""
    if not parts:
        return None
    return round(parts["start"] + parts["plan"] + parts["end"], 2)


def _pixels(store: Path) -> int | None:
    try:
        summary = json.loads((store / "run.json").read_text())
        return int(summary["estimate"]["pixels"])
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None


def verdict(figures: dict[str, Any], max_ratio: float = MAX_RATIO) -> tuple[bool, str]:
    """Whether the resumed run meets issue 6, and why (one line)."""
    problems = []
    if figures["wall_ratio"] > max_ratio:
        problems.append(f"the resumed run cost {figures['wall_ratio']:.1%} > {max_ratio:.0%}")
    if figures["units_redone"]:
        problems.append(f"{figures['units_redone']} finished unit(s) ran again")
    if not figures["maps_identical"]:
        problems.append("the resumed maps differ from the full run's")
    if problems:
        return False, "FAIL: " + "; ".join(problems)
    return True, (
        f"PASS: the resumed run cost {figures['wall_ratio']:.1%} <= {max_ratio:.0%} of a full "
        "run, no finished unit ran again, maps byte-identical"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=12, help="tiling of the demo (default 12)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of the full run done")
    parser.add_argument(
        "--kill-by",
        choices=("time", "work"),
        default="work",
        help="measure that share in the units' compute time (default) or in wall time",
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=MAX_RATIO,
        help=f"fail above this resumed/full wall ratio (default {MAX_RATIO})",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="sitsflow-bench-resume-"))
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        figures = measure(args.factor, folder, kill_at=args.kill_at, kill_by=args.kill_by)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(
            f"resumed run: {figures['resumed_wall_s']:.1f} s wall = {figures['wall_ratio']:.1%} "
            f"of the full run (CPU {figures['cpu_ratio']:.1%}, unit compute "
            f"{figures['compute_ratio']:.1%}); units finished before the kill and run again: "
            f"{figures['units_redone']}; maps byte-identical: {figures['maps_identical']}"
        )
        for name in ("full", "resumed"):
            parts = figures[f"{name}_phases_s"]
            if parts:
                print(
                    f"{name} session, wall s: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
                    + f" (outside the units: {_fixed(parts):.1f} s)"
                )
        print(f"resumed/full cost ratio: {figures['wall_ratio']:.3f}")
        ok, line = verdict(figures, args.max_ratio)
        figures["verdict"] = line
        print(line)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
