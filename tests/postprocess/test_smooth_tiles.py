"""The smooth stage across tiles, end to end: the demo patch cut into four tiles, smoothed chunk
by chunk with halos read across the tile seams, gives exactly the smoothed map of the
single-grid run (whose chunks also meet inside the map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tests.run.helpers import cli, demo_manifest, ledger_records
from tests.run.test_tiles import _four_tiles, _one_grid

pytestmark = pytest.mark.slow


def _smoothed(area: Any) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        area(spec)
        spec["outputs"]["probabilities"] = True
        spec["postprocess"] = {"smoothing": {"window_size": 5}}

    return edit


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("smooth-tiles")
    out = {}
    for name, area in (("single", _one_grid), ("tiled", _four_tiles)):
        done = cli("run", str(demo_manifest(folder / name, _smoothed(area))))
        assert done.returncode == 0, done.stdout + done.stderr
        out[name] = folder / name / "store"
    return out


def test_four_tiles_smoothed_equal_the_single_grid(stores: dict[str, Path]) -> None:
    records = ledger_records(stores["tiled"])
    assert len(records["smooth"]) >= 16  # a unit per predicted chunk (and the stores' set-up)
    for name in ("labels_smoothed.tif", "confidence_smoothed.tif"):
        with (
            rasterio.open(stores["single"] / "maps" / name) as a,
            rasterio.open(stores["tiled"] / "maps" / name) as b,
        ):
            single, tiled = a.read(1), b.read(1)
            assert (single != a.nodata).sum() > 9000, name
            np.testing.assert_array_equal(tiled, single, err_msg=name)
    with (
        rasterio.open(stores["single"] / "maps" / "labels.tif") as raw,
        rasterio.open(stores["single"] / "maps" / "labels_smoothed.tif") as smoothed,
    ):
        assert (raw.read(1) != smoothed.read(1)).any()  # smoothing changed the map
