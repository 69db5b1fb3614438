"""Static catalogs and item-collection files (local and over HTTP), the saved item list, the
catalog fields of the manifest, and MGRS tiles."""

from __future__ import annotations

import copy
import json
import shutil
import sys
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pyproj import Transformer

from pipeline.catalog.config import CatalogConfig
from pipeline.catalog.items import (
    ItemFilter,
    discovery_fingerprint,
    load_saved_items,
    native_grid,
    save_items,
)
from pipeline.catalog.search import HttpSettings, RetryingStacApiIO
from pipeline.catalog.sensors import BandRead, MaskRule, SensorProfile
from pipeline.catalog.static import find_acquisitions, read_item_collection
from pipeline.catalog.tiles import item_tile, normalize_tile, tile_footprint, tile_utm_bounds
from pipeline.cube.read import RasterioReader
from pipeline.errors import CatalogError, ManifestError
from pipeline.grid import plan_grid
from pipeline.manifest import parse_manifest
from pipeline.model import GridSpec
from pipeline.warnings import CatalogWarning
from tests.catalog.stac_fixtures import (
    S2_COLLECTION,
    SCENES,
    TILE_CORNERS,
    expected_ids,
    inside,
    local_writer,
    scene_item,
    write_scene_files,
)
from tests.conftest import DEMO_DIR, DEMO_MANIFEST
from tests.manifest import sections
from tests.servers._process import free_port, running

DEMO_CATALOG = DEMO_DIR / "catalog" / "catalog.json"
START, END = date(2020, 1, 1), date(2020, 12, 31)
FIELD = "spec.sensors[0]"
PROFILE = SensorProfile(
    name="s2",
    bands=(BandRead("red", "red"), BandRead("nir", "nir")),
    masks=(MaskRule("scl", invalid_values=(9,)),),
    date_step_days=10,
)
DEMO_PROFILE = SensorProfile(
    name="s2",
    bands=(BandRead("ndvi", "ndvi", scale=1e-4, nodata=-32768),),
    masks=(MaskRule("cloud", invalid_values=(1,)),),
    date_step_days=10,
)


def write_item_collection(folder: Path, features: list[dict[str, Any]]) -> Path:
    path = folder / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test scene's COGs, with an item collection whose asset hrefs are relative."""
    folder = tmp_path_factory.mktemp("scenes")
    hrefs = write_scene_files(SCENES, local_writer(folder))
    features = []
    for scene in SCENES:
        relative = {k: str(Path(v).relative_to(folder)) for k, v in hrefs[scene.item_id].items()}
        features.append(scene_item(scene, relative))
    write_item_collection(folder, features)
    return folder


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory, scene_folder: Path) -> Iterator[str]:
    """A plain HTTP file server (python -m http.server) over the scenes and the demo catalog."""
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(scene_folder, root / "scenes")
    shutil.copytree(DEMO_DIR / "catalog", root / "demo")
    port = free_port()

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return True
        except OSError:
            return False

    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
               "--directory", str(root)]  # fmt: skip
    with running(command, answers, name="HTTP file server"):
        yield f"http://127.0.0.1:{port}"


def collection_spec(url: str, **fields: Any) -> CatalogConfig:
    return sections.catalog(kind="item_collection", url=url, **fields)


# --- static catalogs -----------------------------------------------------------------------------


def test_demo_catalog_with_a_cloud_filter() -> None:
    spec = sections.catalog(url=str(DEMO_CATALOG), max_cloud_cover=20)
    acquisitions, _ = find_acquisitions(
        spec, DEMO_PROFILE, date(2017, 1, 1), date(2017, 12, 31), field=FIELD
    )
    # What the filter must keep, read from the item files themselves.
    expected = []
    for path in sorted((DEMO_DIR / "catalog" / "slovenia-s2-ndvi").glob("*/*.json")):
        props = json.loads(path.read_text())["properties"]
        if props["datetime"].startswith("2017") and props["eo:cloud_cover"] <= 20:
            expected.append(path.stem)
    assert [a.item_id for a in acquisitions] == expected
    assert 0 < len(expected) < 40
    assert all(Path(a.assets["ndvi"].href).is_file() for a in acquisitions)


def test_demo_catalog_outside_the_bbox_says_which_rule_left_nothing() -> None:
    spec = sections.catalog(url=str(DEMO_CATALOG), bbox=(1.0, 43.0, 2.0, 44.0))
    with pytest.raises(CatalogError) as info:
        find_acquisitions(spec, DEMO_PROFILE, date(2017, 1, 1), date(2017, 12, 31), field=FIELD)
    message = str(info.value)
    assert "none of the" in message and "bbox [1.0, 43.0, 2.0, 44.0]" in message
    assert f"{FIELD}.catalog" in message and "Fix:" in message


def test_unknown_collection_lists_those_present() -> None:
    spec = sections.catalog(url=str(DEMO_CATALOG), collections=["sentinel-2-l2a"])
    with pytest.raises(CatalogError) as info:
        find_acquisitions(spec, DEMO_PROFILE, date(2017, 1, 1), date(2017, 12, 31), field=FIELD)
    message = str(info.value)
    assert "no items in collections ['sentinel-2-l2a']" in message
    assert "collections: slovenia-s2-ndvi" in message and f"{FIELD}.catalog.collections" in message


def test_static_catalog_over_http(http_root: str) -> None:
    spec = sections.catalog(url=f"{http_root}/demo/catalog.json")
    acquisitions, _ = find_acquisitions(
        spec, DEMO_PROFILE, date(2017, 6, 1), date(2017, 6, 30), field=FIELD
    )
    assert acquisitions and all(
        a.assets["ndvi"].href.startswith(f"{http_root}/demo/") for a in acquisitions
    )
    # GDAL reads the asset over HTTP and gets the same pixels as from the local file.
    first = acquisitions[0]
    assert first.grid is not None
    local = first.assets["ndvi"].href.replace(f"{http_root}/demo", str(DEMO_DIR / "catalog"))
    reader = RasterioReader()
    remote_pixels = reader.read(first.assets["ndvi"].href, 1, first.grid)
    np.testing.assert_array_equal(remote_pixels, reader.read(local, 1, first.grid))


def test_files_given_as_a_stac_api_are_refused_with_the_right_kind(http_root: str) -> None:
    def search(url: str) -> str:
        spec = sections.catalog(kind="stac_api", url=url, collections=["c"], tiles=["31TCJ"])
        with pytest.raises(CatalogError) as info:
            find_acquisitions(spec, DEMO_PROFILE, START, END, field=FIELD)
        return str(info.value)

    static = search(f"{http_root}/demo/catalog.json")
    assert "is not a STAC API with item search" in static and "kind: static" in static
    items = search(f"{http_root}/scenes/items.json")
    assert "not valid STAC" in items and f"{FIELD}.catalog.url" in items


def test_missing_static_catalog_over_http_is_named(http_root: str) -> None:
    spec = sections.catalog(url=f"{http_root}/nope/catalog.json", retries=0)
    with pytest.raises(CatalogError) as info:
        find_acquisitions(spec, DEMO_PROFILE, START, END, field=FIELD)
    assert "nope/catalog.json" in str(info.value) and "HTTP 404" in str(info.value)


# --- item collections ----------------------------------------------------------------------------


def test_item_collection_file_with_relative_hrefs(scene_folder: Path) -> None:
    spec = collection_spec(str(scene_folder / "items.json"), tiles=["31TDJ"], max_cloud_cover=20)
    acquisitions, _ = find_acquisitions(spec, PROFILE, START, END, field=FIELD)
    assert [a.item_id for a in acquisitions] == expected_ids(tiles=["31TDJ"], max_cloud=20)
    red = acquisitions[0].assets["red"].href
    assert Path(red).is_absolute() and Path(red).is_file()


def test_item_collection_over_http_is_read_through_gdal(http_root: str) -> None:
    spec = collection_spec(
        f"{http_root}/scenes/items.json", bbox=tuple(inside("31TCJ")), collections=[S2_COLLECTION]
    )
    acquisitions, _ = find_acquisitions(
        spec, PROFILE, date(2020, 3, 1), date(2020, 3, 31), field=FIELD
    )
    assert [a.item_id for a in acquisitions] == ["S2B_31TCJ_20200305_0_L2A"]
    acquisition = acquisitions[0]
    assert acquisition.grid is not None
    red = RasterioReader().read(acquisition.assets["red"].href, 1, acquisition.grid)
    scene = next(s for s in SCENES if s.item_id == acquisition.item_id)
    np.testing.assert_array_equal(red, scene.values("red").astype(np.float32))


def test_item_collection_errors_name_the_file_and_the_feature(tmp_path: Path) -> None:
    not_fc = tmp_path / "catalog.json"
    not_fc.write_text(json.dumps({"type": "Catalog", "id": "x"}))
    with pytest.raises(CatalogError, match=r"not a GeoJSON FeatureCollection \(type 'Catalog'\)"):
        read_item_collection(collection_spec(str(not_fc)), field="c")
    good = scene_item(SCENES[0], {"red": "a.tif", "nir": "b.tif", "scl": "c.tif"})
    broken = copy.deepcopy(good)
    broken["id"] = "broken-item"
    del broken["properties"]["datetime"]
    broken["properties"]["start_datetime"] = "not a date"
    path = write_item_collection(tmp_path, [good, broken])
    with pytest.raises(CatalogError) as info:
        read_item_collection(collection_spec(str(path)), field="c")
    assert "item 'broken-item'" in str(info.value) and "items.json" in str(info.value)
    path.write_text("<html>oops</html>")
    with pytest.raises(CatalogError, match="is not JSON"):
        read_item_collection(collection_spec(str(path)), field="c")


def test_missing_asset_names_the_item_and_the_asset(tmp_path: Path) -> None:
    item = scene_item(SCENES[0], {"red": "a.tif", "nir": "b.tif"})  # no scl
    path = write_item_collection(tmp_path, [item])
    with pytest.raises(CatalogError) as info:
        find_acquisitions(collection_spec(str(path)), PROFILE, START, END, field=FIELD)
    message = str(info.value)
    assert repr(SCENES[0].item_id) in message and "'scl'" in message
    assert "its assets: nir, red" in message and f"{FIELD}.bands" in message


def test_items_without_projection_are_named_when_the_grid_needs_them(tmp_path: Path) -> None:
    hrefs = {"red": "a.tif", "nir": "b.tif", "scl": "c.tif"}
    items = [scene_item(SCENES[0], hrefs), scene_item(SCENES[1], hrefs, projection=False)]
    path = write_item_collection(tmp_path, items)
    spec = replace(collection_spec(str(path)), check_files="never")  # a.tif... are not there
    acquisitions, _ = find_acquisitions(spec, PROFILE, START, END, field=FIELD)
    assert acquisitions[0].grid is not None and acquisitions[1].grid is None
    with pytest.raises(CatalogError) as info:
        plan_grid(sections.area(), acquisitions)
    assert repr(SCENES[1].item_id) in str(info.value) and "proj:" in str(info.value)


def test_asset_projection_picks_the_finest_band_grid() -> None:
    item = pystac.Item.from_dict(scene_item(SCENES[0], {"red": "a.tif", "nir": "b.tif"}))
    coarse = item.assets["nir"].extra_fields
    coarse["proj:transform"] = [20.0, 0.0, 300000.0, 0.0, -20.0, 4900020.0]
    coarse["proj:shape"] = [8, 8]
    assert native_grid(item, ["nir"]) == GridSpec(
        "EPSG:32631", (20.0, 0.0, 300000.0, 0.0, -20.0, 4900020.0), 8, 8
    )
    finest = native_grid(item, ["nir", "red"])
    assert finest is not None and finest.resolution == (10.0, 10.0)


# --- the saved item list -------------------------------------------------------------------------


def test_saved_list_is_reused_when_the_catalog_is_gone(tmp_path: Path, scene_folder: Path) -> None:
    catalog = tmp_path / "copy"
    shutil.copytree(scene_folder, catalog)
    spec = collection_spec(str(catalog / "items.json"), tiles=["31TCK"])
    saved = tmp_path / "run" / "items" / "s2.json"
    first, items = find_acquisitions(spec, PROFILE, START, END, field=FIELD, saved=saved)
    save_items(items, saved, fingerprint=discovery_fingerprint(spec, START, END))
    (catalog / "items.json").unlink()
    again, _ = find_acquisitions(spec, PROFILE, START, END, field=FIELD, saved=saved)
    assert again == first
    # A changed spec or period asks the catalog again (which is gone: a clear error).
    with pytest.warns(CatalogWarning, match="searched again"), pytest.raises(CatalogError):
        find_acquisitions(spec, PROFILE, START, date(2020, 6, 30), field=FIELD, saved=saved)


def test_saved_list_roundtrip_and_corruption(tmp_path: Path, scene_folder: Path) -> None:
    items = read_item_collection(collection_spec(str(scene_folder / "items.json")), field="c")
    path = tmp_path / "s2.json"
    save_items(items[:4], path, fingerprint="abc")
    loaded = load_saved_items(path)
    assert loaded.fingerprint == "abc"
    assert [it.to_dict() for it in loaded.items] == [
        pystac.Item.from_dict(json.loads(path.read_text())["features"][i]).to_dict()
        for i in range(4)
    ]
    assert all(Path(a.href).is_absolute() for it in loaded.items for a in it.assets.values())
    save_items(items[:1], path)  # an old-style list without fingerprint is never reused
    assert load_saved_items(path).fingerprint is None
    path.write_text("{not json")
    with pytest.raises(CatalogError, match=r"s2.json.*cannot be read.*Fix: delete"):
        load_saved_items(path)


def test_fingerprint_ignores_request_settings_only() -> None:
    base = sections.catalog(
        kind="stac_api", url="https://x.org/v1", collections=["c"], tiles=["31TCJ"]
    )
    same = discovery_fingerprint(base, START, END)
    tuned = replace(base, timeout_s=5, retries=1, page_size=10)
    assert discovery_fingerprint(tuned, START, END) == same
    assert discovery_fingerprint(base, START, date(2020, 12, 30)) != same
    assert discovery_fingerprint(replace(base, tiles=["31TCK"]), START, END) != same
    clouds = replace(base, max_cloud_cover=10)
    assert discovery_fingerprint(clouds, START, END) != same


# --- HTTP settings --------------------------------------------------------------------------------


def test_headers_come_from_the_environment_and_stay_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = sections.catalog(
        kind="stac_api", url="https://x.org/v1", collections=["c"], tiles=["31TCJ"],
        headers_from_env={"Authorization": "SITSFLOW_TEST_TOKEN"},
    )  # fmt: skip
    monkeypatch.delenv("SITSFLOW_TEST_TOKEN", raising=False)
    with pytest.raises(CatalogError) as info:
        HttpSettings.from_spec(spec, field="c.headers_from_env")
    assert "'SITSFLOW_TEST_TOKEN'" in str(info.value) and "is not set" in str(info.value)
    monkeypatch.setenv("SITSFLOW_TEST_TOKEN", "Bearer s3cr3t")
    settings = HttpSettings.from_spec(spec, field="c.headers_from_env")
    assert "s3cr3t" not in repr(settings)
    assert RetryingStacApiIO(settings).session.headers["Authorization"] == "Bearer s3cr3t"


# --- item filters ---------------------------------------------------------------------------------


def test_filter_rules(scene_folder: Path) -> None:
    items = read_item_collection(collection_spec(str(scene_folder / "items.json")), field="c")
    by_tile = ItemFilter.of(collection_spec("x", tiles=["31TCJ"]), START, END)
    assert sorted(it.id for it in items if by_tile.keeps(it)) == sorted(
        expected_ids(tiles=["31TCJ"]) + expected_ids(tiles=["31TCJ"], collection="landsat-c2-l2")
    )
    spring = ItemFilter.of(collection_spec("x"), date(2020, 3, 1), date(2020, 4, 30))
    assert sum(spring.keeps(it) for it in items) == 3 * 2 + 2
    no_cloud_property = items[0].clone()
    del no_cloud_property.properties["eo:cloud_cover"]
    assert ItemFilter.of(collection_spec("x", max_cloud_cover=0), START, END).keeps(
        no_cloud_property
    )


# --- tiles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tile"),
    [("31TCJ", "31TCJ"), ("T31TCJ", "31TCJ"), ("MGRS-31TCJ", "31TCJ"), ("31tcj", "31TCJ"),
     ("1CCV", "01CCV"), ("T1CCV", "01CCV"), ("61TCJ", None), ("31TCW", None), ("31ICJ", None),
     ("LC08", None), ("", None)],
)  # fmt: skip
def test_normalize_tile(text: str, tile: str | None) -> None:
    assert normalize_tile(text) == tile


@pytest.mark.parametrize(
    ("properties", "item_id", "tile"),
    [
        ({"grid:code": "MGRS-31TCJ"}, "x", "31TCJ"),  # Earth Search
        ({"s2:mgrs_tile": "31TCJ"}, "x", "31TCJ"),  # Planetary Computer
        ({"mgrs:utm_zone": 31, "mgrs:latitude_band": "T", "mgrs:grid_square": "CJ"}, "x", "31TCJ"),
        ({}, "SENTINEL2A_20200105-105852-123_L2A_T31TCJ_C_V2-2", "31TCJ"),  # THEIA
        ({}, "S2B_MSIL2A_20200105T105339_N0213_R051_T31TCJ_20200105T121209", "31TCJ"),  # ESA
        ({}, "LC08_L2SP_198030_20200105_02_T1", None),  # Landsat: no MGRS tile
    ],
)
def test_item_tile_from_the_usual_places(
    properties: dict[str, Any], item_id: str, tile: str | None
) -> None:
    item = pystac.Item(item_id, None, None, pystac.utils.str_to_datetime("2020-01-05T00:00:00Z"),
                       properties)  # fmt: skip
    assert item_tile(item) == tile


def test_item_tile_from_a_named_property() -> None:
    item = pystac.Item("x", None, None, pystac.utils.str_to_datetime("2020-01-05T00:00:00Z"),
                       {"tile": "T31TCK", "custom:tile": "31TCJ"})  # fmt: skip
    assert item_tile(item, "custom:tile") == "31TCJ"
    assert item_tile(item, "missing") is None


def test_tile_bounds_match_the_esa_tiling_grid() -> None:
    for tile, (epsg, left, top) in TILE_CORNERS.items():
        crs, (x0, _, x1, y1) = tile_utm_bounds(tile)
        assert crs == f"EPSG:{epsg}"
        assert abs(x0 - left) <= 60 and abs(y1 - top) <= 60  # ESA's corners sit on 60 m
        assert x1 - x0 == 109800


def test_tile_footprint_across_the_antimeridian() -> None:
    footprint = tile_footprint("01KAB")
    assert footprint.geom_type == "MultiPolygon"
    west, _, east, _ = footprint.bounds
    assert west == -180 and east == 180


_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMNS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROWS = "ABCDEFGHJKLMNPQRSTUV"


@given(
    zone=st.integers(1, 60),
    lon_in_zone=st.floats(0.5, 5.5),
    band=st.integers(0, 19),
    lat_in_band=st.floats(0.3, 7.7),
)
def test_tile_of_any_point_contains_it(
    zone: int, lon_in_zone: float, band: int, lat_in_band: float
) -> None:
    """Encode a point's tile by the MGRS definition, decode it: the square holds the point."""
    lon = -180 + 6 * (zone - 1) + lon_in_zone
    lat = -80 + 8 * band + min(lat_in_band, 11.7 if band == 19 else 7.7)
    epsg = (32600 if lat >= 0 else 32700) + zone
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    column = _COLUMNS[(zone - 1) % 3][int(x // 100000) - 1]
    row = _ROWS[(int(y // 100000) + (5 if zone % 2 == 0 else 0)) % 20]
    tile = f"{zone:02d}{_BANDS[band]}{column}{row}"
    _, (left, _, _, top) = tile_utm_bounds(tile)
    assert left <= x < left + 100000 and top - 100000 <= y < top, tile


# --- manifest fields ------------------------------------------------------------------------------


def _manifest_with(catalog: dict[str, Any]) -> str:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data["spec"]["sensors"][0]["catalog"] = catalog
    return yaml.safe_dump(data)


API = {"kind": "stac_api", "url": "https://earth-search.aws.element84.com/v1",
       "collections": ["sentinel-2-l2a"], "tiles": ["31TCJ"]}  # fmt: skip
WHERE = "spec.sensors[0].catalog"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"url": "earth-search.aws.element84.com/v1"}, [f"{WHERE}:", "http(s) URL", "Fix:"]),
        ({"collections": []}, ["needs collections", "Fix: list the collection ids"]),
        ({"tiles": []}, ["needs an area", "Fix: set bbox, intersects or tiles"]),
        ({"tiles": ["31TCW"]}, [f"{WHERE}.tiles", "'31TCW' is not an MGRS tile", "Fix:"]),
        ({"bbox": [10, 50, 5, 40]}, ["bbox [10.0, 50.0, 5.0, 40.0] is empty", "Fix:"]),
        ({"bbox": [500000, 4e6, 6e5, 5e6]}, ["not in degrees", "WGS84"]),
        ({"bbox": [1, 43, 2]}, [f"{WHERE}.bbox", "Fix:"]),
        ({"bbox": [1, 43, 2, 44], "intersects": {"type": "Polygon", "coordinates": []}},
         ["keep only one"]),
        ({"intersects": {"type": "Point", "coordinates": [1, 43]}}, ["got type 'Point'", "Fix:"]),
        ({"intersects": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1],
                                                              [0, 0]]]}}, ["not a valid polygon"]),
        ({"max_cloud_cover": 120}, [f"{WHERE}.max_cloud_cover", "less than or equal to 100"]),
        ({"timeout_s": 0}, [f"{WHERE}.timeout_s", "greater than 0"]),
        ({"retries": -1}, [f"{WHERE}.retries", "Fix:"]),
        ({"max_items": 0}, [f"{WHERE}.max_items", "Fix:"]),
        ({"filter": {"eo:cloud_cover": 10}}, ["not CQL2-JSON", "Fix:"]),
        ({"headers_from_env": {"Authorization": "Bearer abc.def"}},
         ["not an environment variable name", "never the secret"]),
        ({"max_clouds": 10}, [f"{WHERE}.max_clouds", "did you mean 'max_cloud_cover'"]),
        ({"kind": "wms"}, [f"{WHERE}.kind", "'stac_api'", "'item_collection'"]),
    ],
)  # fmt: skip
def test_malformed_catalog_fields(change: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(_manifest_with({**API, **change}), base_dir=DEMO_DIR, source="t.yaml")
    message = " ".join(str(info.value).split())
    for word in words:
        assert word in message, message
    assert "Fix:" in message


def test_query_and_filter_only_for_an_api() -> None:
    static = {"url": "catalog/catalog.json", "query": {"eo:cloud_cover": {"lt": 5}}}
    with pytest.raises(ManifestError, match="query is sent to a STAC API server"):
        parse_manifest(_manifest_with(static), base_dir=DEMO_DIR, source="t.yaml")


def test_valid_catalog_kinds_load() -> None:
    api = parse_manifest(_manifest_with({**API, "tiles": ["T31TCJ", "1CCV"],
                                         "max_cloud_cover": 30}),
                         base_dir=DEMO_DIR, source="t.yaml")  # fmt: skip
    catalog = api.spec.sensors[0].catalog
    assert catalog.kind == "stac_api" and catalog.tiles == ["31TCJ", "01CCV"]
    assert catalog.url == API["url"]  # URLs are not resolved against the manifest folder
    items = parse_manifest(_manifest_with({"kind": "item_collection", "url": "items.json"}),
                           base_dir=DEMO_DIR, source="t.yaml")  # fmt: skip
    assert items.spec.sensors[0].catalog.url == str(DEMO_DIR / "items.json")


def test_demo_manifest_still_validates_unchanged() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = parse_manifest(DEMO_MANIFEST.read_text(), base_dir=DEMO_DIR)
    assert manifest.spec.sensors[0].catalog.kind == "static"
