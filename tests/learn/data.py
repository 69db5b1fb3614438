"""Real data for the model tests: the eo-learn Slovenia Sentinel-2 patch as a gap-filled feature
table (named like cube features), and the sits sample tables (both copied into tests/data)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np

from pipeline.cube.gapfill import gapfill
from pipeline.model import DateGrid, day_number

# Small real data sets inside the repository (tests/data/<name>/, with LICENSE and SOURCE.md).
DATA = Path(__file__).resolve().parents[1] / "data"
SLOVENIA = DATA / "eolearn-slovenia-s2" / "TestEOPatch"
SITS = DATA / "sits-samples"
CERRADO = SITS / "cerrado_2classes.csv.gz"
MODIS_NDVI = SITS / "samples_modis_ndvi.csv.gz"
RONDONIA = SITS / "samples_l8_rondonia_2bands.csv.gz"
SLOVENIA_CLASSES = (2, 3, 4, 8)  # LULC codes with enough pixels (code 1 has 11, 0 is unlabelled)


@dataclass(frozen=True)
class Patch:
    """Per pixel (row-major): gap-filled NDVI on the 2017 10-day grid, labels and targets."""

    features: np.ndarray  # (pixels, dates) float32
    feature_names: tuple[str, ...]
    lulc: np.ndarray  # (pixels,) land-use code
    max_ndvi: np.ndarray  # (pixels,) eo-learn's MAX_NDVI layer
    blocks: np.ndarray  # (pixels,) id of the 10 x 10 px block: groups for spatial splits
    shape: tuple[int, int]


@functools.cache
def slovenia() -> Patch:
    ndvi = np.load(SLOVENIA / "data" / "NDVI.npy")[..., 0]
    cloud = np.load(SLOVENIA / "mask" / "CLM.npy")[..., 0]
    is_data = np.load(SLOVENIA / "mask" / "IS_DATA.npy")[..., 0]
    times = [
        datetime.fromisoformat(t) for t in json.loads((SLOVENIA / "timestamps.json").read_text())
    ]
    dates = DateGrid(date(2017, 1, 1), date(2017, 12, 31), 10).dates
    filled = gapfill(
        ndvi,
        (cloud == 0) & (is_data == 1),
        [day_number(t) for t in times],
        [day_number(d) for d in dates],
    )
    _, height, width = filled.values.shape
    rows, cols = np.indices((height, width))
    return Patch(
        features=np.ascontiguousarray(filled.values.reshape(len(dates), -1).T),
        feature_names=tuple(f"s2_ndvi_{d:%Y%m%d}" for d in dates),
        lulc=np.load(SLOVENIA / "mask_timeless" / "LULC.npy")[..., 0].ravel().astype(np.int64),
        max_ndvi=np.load(SLOVENIA / "data_timeless" / "MAX_NDVI.npy")[..., 0].ravel(),
        blocks=((rows // 10) * 100 + cols // 10).ravel(),
        shape=(height, width),
    )


def block_holdout(blocks: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for pixels of a random share of the blocks (whole blocks: no neighbour leakage)."""
    unique = np.unique(blocks)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(unique, max(1, round(len(unique) * fraction)), replace=False)
    return np.isin(blocks, chosen)
