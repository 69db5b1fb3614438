"""STAC items of the output COGs and the run's self-contained catalog, checked offline.

``item.validate()`` fetches the extension schemas from the network, which tests may not reach;
instead the core item schema bundled with pystac is applied with a registry that holds only
local schemas, and the extension fields are checked by hand against the COG they describe.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pystac
import pytest
import rasterio
import rasterio.shutil
from jsonschema import Draft7Validator
from pystac.validation.local_validator import get_local_schema_cache
from rasterio.warp import transform_bounds
from referencing import Registry, Resource

import pipeline
from pipeline.errors import InputDataError, OutputError
from pipeline.model import ClassInfo, GridSpec
from pipeline.predict import stac as stac_module
from pipeline.predict.stac import (
    MapOutput,
    describe_cog,
    item_id,
    output_item,
    write_run_catalog,
)
from pipeline.storage import RunStore

PERIOD = (date(2024, 1, 1), date(2024, 12, 31))
LEGEND = [
    ClassInfo(1, "Water", "#1f78b4"),
    ClassInfo(2, "Forêt caducifoliée", "#33a02c"),
    ClassInfo(4, "Crops & <grass>", "yellow"),
]
# A UTM grid far enough from the central meridian that its edges bend in lon/lat.
GRID = GridSpec("EPSG:32633", (20.0, 0.0, 300000.0, 0.0, -20.0, 5200000.0), 50, 30)

EXTENSIONS = {
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
}


def _write_cog(path: Path, data: np.ndarray, grid: GridSpec, nodata: float | None) -> Path:
    staging = path.with_suffix(".staging.tif")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": grid.affine,
        "nodata": nodata,
    }
    with rasterio.open(staging, "w", **profile) as dst:
        dst.write(data, 1)
    rasterio.shutil.copy(staging, path, driver="COG", blocksize=16, overviews="AUTO")
    staging.unlink()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    rng = np.random.default_rng(3)
    labels = rng.choice(np.array([1, 2, 4], np.uint8), size=GRID.shape)
    labels[:2] = 0
    confidence = rng.integers(30, 101, GRID.shape).astype(np.uint8)
    confidence[:2] = 255
    (root / "maps").mkdir(parents=True)
    _write_cog(root / "maps" / "labels.tif", labels, GRID, 0)
    _write_cog(root / "maps" / "confidence.tif", confidence, GRID, 255)
    return root


def _outputs(root: Path) -> list[MapOutput]:
    return [
        describe_cog(root / "maps" / "labels.tif", role="labels", href="maps/labels.tif"),
        describe_cog(
            root / "maps" / "confidence.tif", role="confidence", href="maps/confidence.tif"
        ),
    ]


def _core_errors(document: dict[str, Any]) -> list[str]:
    """Errors of ``document`` against pystac's bundled core item schema, offline."""
    cache = get_local_schema_cache()
    registry: Registry[Any] = Registry().with_resources(
        [(uri, Resource.from_contents(schema)) for uri, schema in cache.items()]
    )
    uri = next(u for u in cache if u.endswith("item-spec/json-schema/item.json"))
    validator = Draft7Validator(cache[uri], registry=registry)
    return [e.message for e in validator.iter_errors(document)]


# --------------------------------------------------------------------------------------------


def test_label_item_matches_the_cog(store: Path) -> None:
    labels, confidence = _outputs(store)
    item = output_item(labels, run_name="slovenia-demo", period=PERIOD, legend=LEGEND,
                       others=[labels, confidence])  # fmt: skip
    document = item.to_dict()

    # Required core fields, by hand, then the bundled core schema.
    assert document["type"] == "Feature"
    assert document["stac_version"] == pystac.get_stac_version()
    assert document["id"] == "slovenia-demo-labels"
    assert document["geometry"]["type"] == "Polygon"
    assert len(document["bbox"]) == 4
    assert set(document["stac_extensions"]) == EXTENSIONS
    assert isinstance(document["links"], list)
    assert _core_errors(document) == []
    # Round trip.
    assert pystac.Item.from_dict(json.loads(json.dumps(document))).to_dict() == document

    props = document["properties"]
    assert props["datetime"] is None
    assert props["start_datetime"] == "2024-01-01T00:00:00Z"
    assert props["end_datetime"] == "2024-12-31T23:59:59Z"
    assert props["processing:software"] == {"sitsflow": pipeline.__version__}
    assert "created" not in props  # deterministic unless asked

    with rasterio.open(store / "maps" / "labels.tif") as src:
        assert props["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert props["proj:shape"] == [src.height, src.width]
        assert props["proj:transform"] == list(src.transform)[:6]
        assert props["proj:bbox"] == list(src.bounds)
        band = document["assets"]["data"]["raster:bands"][0]
        assert band["nodata"] == src.nodata == 0
        assert band["data_type"] == src.dtypes[0] == "uint8"
        assert band["spatial_resolution"] == src.res[0]
        corners = [(x, y) for x in (src.bounds.left, src.bounds.right)
                   for y in (src.bounds.bottom, src.bounds.top)]  # fmt: skip
        to_lonlat = pyproj.Transformer.from_crs(src.crs.to_wkt(), "EPSG:4326", always_xy=True)
        expected_bbox = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)

    west, south, east, north = document["bbox"]
    for x, y in corners:
        lon, lat = to_lonlat.transform(x, y)
        assert west <= lon <= east
        assert south <= lat <= north
    assert document["bbox"] == pytest.approx(list(expected_bbox), abs=1e-9)
    ring = document["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert len(ring) == 4 * (stac_module.EDGE_POINTS - 1) + 1

    asset = document["assets"]["data"]
    assert asset["href"] == "maps/labels.tif"
    assert asset["type"] == pystac.MediaType.COG
    assert asset["roles"] == ["data"]
    classes = asset["classification:classes"]
    assert [(c["value"], c["title"], c["color_hint"]) for c in classes if not c.get("nodata")] == [
        (1, "Water", "1F78B4"),
        (2, "Forêt caducifoliée", "33A02C"),
        (4, "Crops & <grass>", "FFFF00"),
    ]
    for c in classes:
        assert c["name"].replace("_", "").replace("-", "").isalnum()  # v2.0.0 name pattern
        assert c["name"].isascii()
    assert [c for c in classes if c.get("nodata")] == [
        {"value": 0, "name": "nodata", "title": "no data", "nodata": True}
    ]
    related = [link for link in document["links"] if link["rel"] == "related"]
    assert related == [
        {"rel": "related", "href": "maps/confidence.tif", "type": pystac.MediaType.COG,
         "title": "confidence map"}
    ]  # fmt: skip


def test_confidence_and_value_items() -> None:
    confidence = MapOutput("confidence", "maps/confidence.tif", GRID, "uint8", 255.0)
    item = output_item(confidence, run_name="r", period=PERIOD).to_dict()
    band = item["assets"]["data"]["raster:bands"][0]
    assert band == {"nodata": 255, "data_type": "uint8", "spatial_resolution": 20.0, "unit": "%"}
    assert "classification:classes" not in item["assets"]["data"]
    assert _core_errors(item) == []

    values = MapOutput("values", "maps/values.tif", GRID, "float32", math.nan, unit="m",
                       scale=0.1, offset=1.0, zarr_href="maps/map.zarr")  # fmt: skip
    item = output_item(values, run_name="r", period=PERIOD, created=datetime(2025, 1, 2, 3, 4, 5,
                       tzinfo=UTC)).to_dict()  # fmt: skip
    band = item["assets"]["data"]["raster:bands"][0]
    assert band["nodata"] == "nan"
    assert (band["unit"], band["scale"], band["offset"]) == ("m", 0.1, 1.0)
    assert item["assets"]["zarr"]["href"] == "maps/map.zarr"
    assert item["assets"]["zarr"]["type"] == pystac.MediaType.VND_ZARR
    assert item["properties"]["created"] == "2025-01-02T03:04:05Z"
    json.dumps(item, allow_nan=False)
    assert _core_errors(item) == []


def test_class_counts_and_geographic_grid() -> None:
    grid = GridSpec("EPSG:4326", (0.01, 0.0, 14.0, 0.0, -0.01, 46.5), 100, 50)
    labels = MapOutput("labels", "labels.tif", grid, "uint8", 255.0)
    item = output_item(labels, run_name="r", period=PERIOD, legend=LEGEND[:2],
                       class_counts={1: 30, 2: 90, 7: 0})  # fmt: skip
    assert item.bbox == pytest.approx([14.0, 46.0, 15.0, 46.5])
    assert item.properties["proj:code"] == "EPSG:4326"
    classes = item.assets["data"].extra_fields["classification:classes"]
    assert [(c["value"], c.get("count"), c.get("percentage")) for c in classes] == [
        (1, 30, 25.0),
        (2, 90, 75.0),
        (255, None, None),
    ]


def test_same_inputs_same_item() -> None:
    labels = MapOutput("labels", "maps/labels.tif", GRID, "uint8", 0.0)
    first = output_item(labels, run_name="r", period=PERIOD, legend=LEGEND).to_dict()
    assert output_item(labels, run_name="r", period=PERIOD, legend=LEGEND).to_dict() == first


def test_crs_without_epsg_code_uses_wkt2() -> None:
    wkt = pyproj.CRS.from_proj4(
        "+proj=aea +lat_1=43 +lat_2=62 +lat_0=30 +lon_0=10 +ellps=GRS80 +units=m"
    ).to_wkt()
    grid = GridSpec(wkt, (100.0, 0.0, 0.0, 0.0, -100.0, 2000000.0), 10, 10)
    item = output_item(MapOutput("confidence", "c.tif", grid, "uint8", 255.0), run_name="r",
                       period=PERIOD).to_dict()  # fmt: skip
    assert item["properties"]["proj:code"] is None  # null: the CRS has no code (v2.0.0)
    assert pyproj.CRS.from_wkt(item["properties"]["proj:wkt2"]).equals(pyproj.CRS.from_wkt(wkt))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"legend": []}, InputDataError, "needs the legend"),
        ({"legend": [ClassInfo(0, "bare")]}, InputDataError, "no-data value 0 is also"),
        ({"legend": [ClassInfo(1, "a", "nope")]}, InputDataError, "not a colour"),
        ({"legend": [ClassInfo(1, "a"), ClassInfo(1, "b")]}, InputDataError, "twice"),
        ({"run_name": "my run"}, OutputError, "metadata.name"),
        ({"period": (date(2024, 2, 1), date(2024, 1, 1))}, InputDataError, "before it starts"),
    ],
)
def test_bad_inputs(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    labels = MapOutput("labels", "maps/labels.tif", GRID, "uint8", 0.0)
    arguments: dict[str, Any] = {"run_name": "r", "period": PERIOD, "legend": LEGEND, **kwargs}
    with pytest.raises(error, match=message):
        output_item(labels, **arguments)


def test_item_id() -> None:
    assert item_id("slovenia-demo", "probability_3") == "slovenia-demo-probability_3"
    with pytest.raises(OutputError, match="letters, digits"):
        item_id("../up", "labels")


def test_describe_cog_errors(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="cannot open the map"):
        describe_cog(tmp_path / "missing.tif", role="labels", href="x.tif")


# --------------------------------------------------------------------------------------------
# catalog


def _catalog_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_catalog_is_self_contained(store: Path) -> None:
    outputs = _outputs(store)
    items = [
        output_item(o, run_name="demo", period=PERIOD, legend=LEGEND, others=outputs)
        for o in outputs
    ]
    name = write_run_catalog(RunStore(store), "stac", items, run_name="demo")
    assert name == "stac/collection.json"
    assert _catalog_files(store / "stac") == [
        "collection.json",
        "demo-confidence/demo-confidence.json",
        "demo-labels/demo-labels.json",
    ]
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # no temporaries
    for path in (store / "stac").rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert str(store) not in text  # relative hrefs only
        assert '"self"' not in text
        for link in json.loads(text)["links"]:
            assert not link["href"].startswith("/")

    # Move the whole store: the catalog still resolves to the COGs.
    moved = store.with_name("moved")
    store.rename(moved)
    collection = pystac.Collection.from_file(str(moved / "stac" / "collection.json"))
    read = {item.id: item for item in collection.get_items()}
    assert set(read) == {"demo-labels", "demo-confidence"}
    labels = read["demo-labels"]
    assert Path(labels.assets["data"].get_absolute_href() or "") == moved / "maps" / "labels.tif"
    assert labels.collection_id == "demo"
    related = labels.get_single_link("related")
    assert related is not None
    assert Path(related.get_absolute_href() or "").resolve() == moved / "maps" / "confidence.tif"
    assert _core_errors(labels.to_dict(include_self_link=False)) == []

    west, south, east, north = collection.extent.spatial.bboxes[0]
    for item in read.values():
        assert item.bbox is not None
        assert west <= item.bbox[0] and east >= item.bbox[2]
        assert south <= item.bbox[1] and north >= item.bbox[3]
    assert collection.extent.temporal.intervals == [
        [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)]
    ]


def test_rewrite_is_all_or_nothing(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = _outputs(store)
    items = [output_item(o, run_name="demo", period=PERIOD, legend=LEGEND) for o in outputs]
    write_run_catalog(RunStore(store), "stac", items, run_name="demo")
    before = {n: (store / "stac" / n).read_bytes() for n in _catalog_files(store / "stac")}

    def broken(self: pystac.Collection, *args: object, **kwargs: object) -> None:
        (Path(self.get_self_href() or "").parent / "half.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(pystac.Collection, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        write_run_catalog(RunStore(store), "stac", items[:1], run_name="other")
    assert {n: (store / "stac" / n).read_bytes() for n in _catalog_files(store / "stac")} == before
    assert not [p for p in store.iterdir() if p.name.startswith(".")]


def test_catalog_errors(tmp_path: Path) -> None:
    labels = MapOutput("labels", "maps/labels.tif", GRID, "uint8", 0.0)
    item = output_item(labels, run_name="r", period=PERIOD, legend=LEGEND)
    with pytest.raises(OutputError, match="no STAC items"):
        write_run_catalog(RunStore(tmp_path), "stac", [], run_name="r")
    with pytest.raises(OutputError, match="repeat"):
        write_run_catalog(RunStore(tmp_path), "stac", [item, item], run_name="r")
    with pytest.raises(OutputError, match="own folder"):
        write_run_catalog(RunStore(tmp_path), "", [item], run_name="r")
