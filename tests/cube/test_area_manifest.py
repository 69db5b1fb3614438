"""Manifest fields of the cube stage (spec.area tilings, spec.features): good values load,
malformed ones are refused with the field, the bad value and a fix."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pipeline.errors import ManifestError
from pipeline.grid import grid_kind, plan_tiles
from pipeline.manifest import RunManifest, parse_manifest, resolve
from tests.conftest import DEMO_DIR, DEMO_MANIFEST


def parse(
    area: dict[str, Any] | None = None, features: dict[str, Any] | None = None
) -> RunManifest:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    if area is not None:
        data["spec"]["area"] = area
    if features is not None:
        data["spec"]["features"] = features
    return parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR, source="test.yaml")


TRIANGLE = [[1.4, 43.58], [1.48, 43.58], [1.48, 43.64], [1.4, 43.58]]


def test_the_demo_keeps_its_native_grid_and_indices() -> None:
    config = resolve(parse())
    assert grid_kind(config.area) == "native"
    assert config.features.indices is None  # defaults per sensor: none for an ndvi-only sensor
    assert config.features.user_functions == ()


@pytest.mark.parametrize(
    ("area", "kind", "tiles"),
    [
        ({"tiles": ["T31TCJ", "31tdj"]}, "mgrs", ["31TCJ", "31TDJ"]),
        ({"grid": "mgrs", "tiles": ["31TCJ"], "resolution": 20}, "mgrs", ["31TCJ"]),
        ({"region": [1.40, 43.58, 1.48, 43.64]}, "mgrs", ["31TCJ"]),
        (
            {"region": {"type": "Polygon", "coordinates": [TRIANGLE]}},
            "mgrs",
            ["31TCJ"],
        ),
        (
            {"crs": "EPSG:2154", "resolution": 10, "tile_size": 5000, "tiles": ["x0y0", "x1y0"]},
            "user",
            ["x0y0", "x1y0"],
        ),
        (
            {"crs": "EPSG:32631", "resolution": 10, "tile_size": 1000,
             "origin": [300000, 4900020], "bbox": [300000, 4890020, 315000, 4900020]},
            "user",
            ["x0y0", "x1y0"],
        ),
    ],
)  # fmt: skip
def test_tilings_load(area: dict[str, Any], kind: str, tiles: list[str]) -> None:
    area_config = resolve(parse(area=area)).area  # what the grid code takes
    assert grid_kind(area_config) == kind
    assert [t.id for t in plan_tiles(area_config, []).tiles] == tiles


MALFORMED = [
    ({"tiles": ["31TCI"]}, "spec.area.tiles", "31TCI"),
    ({"tiles": ["31TCJ"], "crs": "EPSG:32631"}, "spec.area", "crs do not apply to the mgrs grid"),
    ({"grid": "mgrs"}, "spec.area", "needs tiles or a region"),
    ({"grid": "mgrs", "tiles": ["31TCJ"], "resolution": 7}, "spec.area", "does not divide"),
    ({"grid": "mgrs", "tiles": ["x0y0"]}, "spec.area", "user-grid ids"),
    ({"tile_size": 100, "crs": "EPSG:2154", "bbox": [0, 0, 1, 1]}, "spec.area", "resolution"),
    ({"grid": "user", "crs": "EPSG:2154", "resolution": 10, "tile_size": 100}, "spec.area",
     "needs tiles, a bbox or a region"),
    ({"grid": "user", "crs": "EPSG:2154", "resolution": 10, "tile_size": 100,
      "tiles": ["31TCJ"]}, "spec.area", "MGRS ids"),
    ({"tile_size": 8, "crs": "EPSG:2154", "resolution": 10, "tiles": ["x0y0"]},
     "spec.area.tile_size", "greater than or equal to 16"),
    ({"region": [10, 50, 5, 52]}, "spec.area.region", "not an area in degrees"),
    ({"region": {"type": "Point", "coordinates": [1, 2]}}, "spec.area.region", "not a Polygon"),
    ({"tiles": ["31TCJ"], "origin": [0, 0]}, "spec.area", "origin do not apply"),
    ({"grid": "native", "tiles": ["31TCJ"]}, "spec.area", "only apply to the mgrs and user"),
    ({"grid": "hexagons"}, "spec.area.grid", "'native', 'mgrs' or 'user'"),
]  # fmt: skip


@pytest.mark.parametrize(("area", "field", "words"), MALFORMED)
def test_malformed_area_is_refused_with_a_fix(area: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse(area=area)
    message = str(caught.value)
    assert f"  - {field}:" in message, message
    assert words in message, message
    assert "Fix:" in message


@pytest.mark.parametrize(
    ("features", "field", "words"),
    [
        ({"user_functions": ["not a path"]}, "spec.features.user_functions", "package.module:"),
        ({"user_functions": ["mymodule"]}, "spec.features.user_functions", "not an import path"),
        ({"user_functions": ["a:f", "a:f"]}, "spec.features.user_functions", "twice"),
        ({"indices": ["ndvi"]}, "spec", "needs bands ['red', 'nir']"),
        ({"indices": ["evi"]}, "spec.features.indices[0]", "'ndvi', 'ndwi' or 'brightness'"),
    ],
)  # fmt: skip
def test_malformed_features_are_refused_with_a_fix(
    features: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse(features=features)
    message = str(caught.value)
    assert f"  - {field}:" in message, message
    assert words in message, message
    assert "Fix:" in message


def test_features_load() -> None:
    spec = parse(features={"indices": [], "user_functions": ["my_pkg.feats:ndre"]}).spec
    assert spec.features.indices == []
    assert spec.features.user_functions == ["my_pkg.feats:ndre"]
