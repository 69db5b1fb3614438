"""The saved item list, over a whole run: the bundled demo runs from a copy of its catalog into a
temporary store, the catalog then disappears, and the resumed run still succeeds with the same
acquisitions, without asking the catalog (there is nothing left to ask).

The catalog is its STAC JSON files (catalog, collection, items); the COGs they list are the data
and stay, as when a catalog service is down and the object store is not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import xarray as xr

from pipeline.catalog.sensors import SensorProfile
from pipeline.catalog.static import find_acquisitions
from pipeline.errors import CatalogError
from pipeline.manifest import load_manifest, resolve
from tests.conftest import DEMO_DIR, REPO

pytestmark = pytest.mark.slow


def run_cli(manifest: Path, store: Path, *more: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--store", str(store), *more],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def saved_acquisitions(path: Path) -> list[tuple[str, str]]:
    features = json.loads(path.read_text())["features"]
    return [(f["id"], f["properties"]["datetime"]) for f in features]


@pytest.mark.timeout(900)
def test_resumed_run_uses_the_saved_items_when_the_catalog_is_gone(tmp_path: Path) -> None:
    demo = tmp_path / "slovenia"
    shutil.copytree(DEMO_DIR, demo, ignore=shutil.ignore_patterns("make_catalog.py"))
    manifest, catalog, store = demo / "run.yaml", demo / "catalog", tmp_path / "store"
    assert load_manifest(manifest).spec.sensors[0].catalog.url == str(catalog / "catalog.json")
    run_cli(manifest, store)
    saved = store / "items" / "s2.json"
    first = saved.read_bytes()
    acquisitions = saved_acquisitions(saved)
    assert len(acquisitions) == 36  # the demo's 2017 acquisitions
    hrefs = {a["href"] for f in json.loads(first)["features"] for a in f["assets"].values()}
    assert all(h.startswith(str(catalog.resolve())) for h in hrefs)  # the copy, not the repo
    times = xr.open_zarr(store / "cube.zarr")["s2_time"].values.copy()

    stac_files = list(catalog.rglob("*.json"))  # the catalog, its collection, every item
    assert len(stac_files) > len(acquisitions) + 2  # items of other years too
    for path in stac_files:
        path.unlink()
    # The catalog is unreachable now: a discovery without the saved list fails.
    spec = resolve(load_manifest(manifest))
    sensor = spec.sensors[0]
    with pytest.raises(CatalogError):
        find_acquisitions(
            sensor.catalog, SensorProfile.from_spec(sensor), date(2017, 1, 1),
            date(2017, 12, 31), field="sensors[0]",
        )  # fmt: skip

    output = run_cli(manifest, store, "--resume")
    assert "36 acquisition(s)" in output  # the plan was made from the saved list
    assert saved.read_bytes() == first  # read, not replaced
    assert saved_acquisitions(saved) == acquisitions
    assert (xr.open_zarr(store / "cube.zarr")["s2_time"].values == times).all()
    summary = json.loads((store / "run.json").read_text())
    assert Path(summary["outputs"]["labels"]).exists()
