"""Small seeded S2-like series for cube tests: COGs on disk and the matching Acquisitions.

Every pixel value is a known function of (date, row, column), so a test can compute what any
cube pixel must hold and a one-pixel shift anywhere changes the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from pipeline.catalog.sensors import BandRead, MaskRule, SensorProfile
from pipeline.model import Acquisition, AssetRef, GridSpec

EPSG = "EPSG:32631"
LEFT, TOP = 300_000.0, 4_900_020.0


@dataclass(frozen=True)
class Series:
    profile: SensorProfile
    acquisitions: list[Acquisition]
    grid: GridSpec
    raw: dict[str, np.ndarray]
    """Band name -> (T, H, W) raw values as written (uint16), and 'scl' (T, H/2, W/2)."""


def band_values(t: int, b: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Raw value of band b on date t: unique per pixel, smooth in time."""
    return (1000 + 100 * b + 7 * t + (rows % 37) * 11 + (cols % 41) * 3 + rows // 37).astype(
        np.uint16
    )


def write_cog(path: Path, data: np.ndarray, resolution: float, nodata: int | None = 0) -> None:
    profile = {
        "driver": "COG", "width": data.shape[1], "height": data.shape[0], "count": 1,
        "dtype": str(data.dtype), "crs": EPSG, "nodata": nodata, "compress": "DEFLATE",
        "transform": from_origin(LEFT, TOP, resolution, resolution), "blocksize": 128,
        "overviews": "NONE",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def make_series(
    root: Path,
    *,
    size: int = 96,
    n_dates: int = 6,
    name: str = "s2",
    first_day: int = 3,
    step: int = 17,
    seed: int = 0,
    date_step_days: int = 10,
    resolution: float = 10.0,
) -> Series:
    """``n_dates`` acquisitions of 4 bands at ``resolution`` and an SCL-like mask at twice that,
    with clouds, covering ``size`` x ``size`` pixels of 10 m."""
    rng = np.random.default_rng(seed)
    n = round(size * 10 / resolution)
    rows, cols = np.mgrid[0:n, 0:n]
    bands = ("blue", "green", "red", "nir")
    raw: dict[str, list[np.ndarray]] = {b: [] for b in (*bands, "scl")}
    acquisitions = []
    for t in range(n_dates):
        when = datetime(2021, 1, 1, 10, 30, tzinfo=UTC) + timedelta(days=first_day + step * t)
        folder = root / f"{name}_{t:02d}"
        folder.mkdir(parents=True)
        for b, band in enumerate(bands):
            data = band_values(t, b, rows, cols)
            write_cog(folder / f"{band}.tif", data, resolution)
            raw[band].append(data)
        scl = np.full((n // 2, n // 2), 4, dtype=np.uint8)
        clouds = rng.random(scl.shape) < 0.25
        scl[clouds] = 9
        if t == 0:
            scl[:, :3] = 0  # no data along an edge on the first date
        write_cog(folder / "scl.tif", scl, 2 * resolution)
        raw["scl"].append(scl)
        assets = {b: AssetRef(str(folder / f"{b}.tif")) for b in (*bands, "scl")}
        acquisitions.append(Acquisition(f"{name}-{t}", name, when, assets, _grid(n, resolution)))
    profile = SensorProfile(
        name=name,
        bands=tuple(BandRead(b, b, 1e-4, 0.0, 0) for b in bands),
        masks=(MaskRule("scl", (0, 3, 8, 9, 10)),),
        date_step_days=date_step_days,
    )
    stacked = {k: np.stack(v) for k, v in raw.items()}
    return Series(profile, acquisitions, _grid(size, 10.0), stacked)  # the 10 m cube grid


def _grid(size: int, resolution: float) -> GridSpec:
    return GridSpec(EPSG, (resolution, 0.0, LEFT, 0.0, -resolution, TOP), size, size)


def expected_valid(series: Series) -> np.ndarray:
    """(T, H, W) validity the cube must find: SCL clear (nearest 20 -> 10 m) and data present."""
    scl = np.repeat(np.repeat(series.raw["scl"], 2, axis=1), 2, axis=2)
    return ~np.isin(scl, [0, 3, 8, 9, 10])
