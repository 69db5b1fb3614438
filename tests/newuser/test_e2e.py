"""A new user's public data, end to end: a catalog whose CRS is only WKT2 (MODIS sinusoidal), a
reference of points with text class labels, repeated runs; then that run's model used as an
external model on the demo reference, whose codes number the same classes in another order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from pyproj import CRS

from pipeline.errors import ModelError
from pipeline.manifest import load_manifest, resolve
from pipeline.run.runner import plan_run
from tests.conftest import DEMO_DIR
from tests.newuser.fixtures import SINUSOIDAL, text_reference, wkt2_catalog
from tests.run.helpers import cli, demo_manifest

pytestmark = pytest.mark.slow

NAMES = ["artificial surface", "cultivated land", "forest", "grassland", "schrubland"]
# The demo reference's own codes (LULC_ID) of the names above.
DEMO_CODES = {"artificial surface": 8, "cultivated land": 1, "forest": 2, "grassland": 3,
              "schrubland": 4}  # fmt: skip


def _flat(done: Any) -> str:
    return " ".join((done.stdout + done.stderr).split())


@pytest.fixture(scope="module")
def points_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("points")
    catalog = wkt2_catalog(folder)
    points = text_reference(folder / "reference", points=True, crs=SINUSOIDAL)

    def change(spec: dict[str, Any]) -> None:
        spec["sensors"][0]["catalog"]["url"] = str(catalog)
        spec["reference"] = {"path": str(points), "label_field": "LULC_NAME"}
        spec["sampling"].update(runs=2, min_pixels_per_class=2)

    done = cli("run", str(demo_manifest(folder / "run", change)), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder / "run" / "store", _flat(done)


def test_a_wkt2_only_catalog_maps_in_its_own_crs(points_run: tuple[Path, str]) -> None:
    store, _ = points_run
    with rasterio.open(store / "maps" / "labels.tif") as src:
        assert CRS.from_wkt(src.crs.to_wkt()) == SINUSOIDAL
    item = json.loads(
        (store / "stac" / "slovenia-demo-labels" / "slovenia-demo-labels.json").read_text()
    )
    assert CRS.from_user_input(item["properties"]["proj:wkt2"]) == SINUSOIDAL


def test_text_labels_become_named_codes(points_run: tuple[Path, str]) -> None:
    store, output = points_run
    assert "class codes 1=artificial surface, 2=cultivated land, 3=forest" in output
    metrics = json.loads((store / "report" / "metrics.json").read_text())
    legend = {int(code): c["name"] for code, c in metrics["legend"].items()}
    assert legend == {code: name for code, name in enumerate(NAMES, start=1) if code in legend}


def test_points_are_called_points(points_run: tuple[Path, str]) -> None:
    store, output = points_run
    assert "validation pixels of points never used in training" in output
    report = (store / "report" / "report.html").read_text()
    assert "validation points / pixels" in report and "validation polygons" not in report
    assert "split by point" in report


def test_the_console_gives_the_mean_and_interval_across_runs(
    points_run: tuple[Path, str],
) -> None:
    store, output = points_run
    runs = json.loads((store / "report" / "metrics.json").read_text())["across_runs"]
    accuracy = runs["overall"]["overall_accuracy"]
    assert "across 2 runs (seeds [0, 1])" in output
    assert f"overall accuracy {accuracy['mean']:.3f} ± {accuracy['ci_half_width']:.3f}" in output


def test_report_and_catalog(points_run: tuple[Path, str]) -> None:
    store, _ = points_run
    report = (store / "report" / "report.html").read_text()
    assert '<table class="inner"><tr><th>discover</th>' in report  # stage seconds: a table
    collection = json.loads((store / "stac" / "collection.json").read_text())
    assert collection["license"] == "MIT"  # the demo collection's
    links = [k for k in collection["links"] if k["rel"] == "license"]
    assert links and links[0]["href"].endswith("LICENSE")


@pytest.fixture(scope="module")
def named_model(points_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The points run's model, with the class names ``sitsflow train`` records."""
    store, _ = points_run
    model = tmp_path_factory.mktemp("external") / "model"
    shutil.copytree(store / "model", model)
    contract = json.loads((model / "model.json").read_text())
    contract["training"]["class_names"] = {str(c): n for c, n in enumerate(NAMES, start=1)}
    (model / "model.json").write_text(json.dumps(contract))
    return model


def test_an_external_model_in_another_order_is_matched_by_name(
    points_run: tuple[Path, str], named_model: Path, tmp_path: Path
) -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["model"] = {"kind": "external", "path": str(named_model)}

    done = cli("run", str(demo_manifest(tmp_path, change)), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    store, _ = points_run
    with rasterio.open(store / "maps" / "labels.tif") as src:
        model_codes = src.read(1)
    with rasterio.open(tmp_path / "store" / "maps" / "labels.tif") as src:
        run_codes = src.read(1)
    # The same pixels and the same model: the same classes, under the reference's codes.
    recode = np.zeros(256, dtype=run_codes.dtype)
    for code, name in enumerate(NAMES, start=1):
        recode[code] = DEMO_CODES[name]
    assert np.array_equal(recode[model_codes], run_codes)
    saved = json.loads((tmp_path / "store" / "model" / "model.json").read_text())
    assert saved["training"]["codes_in_source_model"] == {
        str(DEMO_CODES[n]): c for c, n in enumerate(NAMES, start=1)
    }


def test_an_external_model_whose_names_differ_is_refused_at_planning(
    named_model: Path, tmp_path: Path
) -> None:
    import geopandas as gpd

    frame = gpd.read_file(DEMO_DIR / "reference" / "lulc.gpkg")
    frame["LULC_NAME"] = frame["LULC_NAME"].replace({"grassland": "meadow"})
    frame.to_file(tmp_path / "renamed.gpkg")

    def change(spec: dict[str, Any]) -> None:
        spec["model"] = {"kind": "external", "path": str(named_model)}
        spec["reference"]["path"] = str(tmp_path / "renamed.gpkg")

    with pytest.raises(ModelError) as error:
        plan_run(resolve(load_manifest(demo_manifest(tmp_path / "run", change))))
    message = str(error.value)
    assert "['meadow']" in message and "3=meadow" in message and "4=grassland" in message
