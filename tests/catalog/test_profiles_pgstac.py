"""Built-in sensor profiles through the real server path, end to end.

Generated scenes (pipeline/testing/generators.py) in three real layouts, Sen2Cor L2A as Earth
Search serves it (both processing baselines: the +1000 reflectance offset from 04.00 on), THEIA
L2A (MAJA) and Landsat Collection 2 L2, have their COGs put on an S3 API server (moto) and their
items loaded into stac-fastapi-pgstac. Discovery searches that API with the built-in profile,
the cube reader reads the acquisitions through GDAL's /vsis3/, and the values and validity
masks must equal those computed here by hand from the raw arrays the generator wrote.

This is what catches a server that rewrites what the profiles read from the items: the
``proj:*`` fields (grids), ``s2:processing_baseline`` (the offset), the tile ids, the asset keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from pipeline.catalog.profiles import profile_by_name
from pipeline.catalog.sensors import SensorProfile
from pipeline.catalog.static import find_acquisitions
from pipeline.cube.build import read_sensor
from pipeline.cube.plan import SensorCube
from pipeline.cube.read import RasterioReader
from pipeline.model import Acquisition
from pipeline.testing import generators as gen
from pipeline.testing.generators import SyntheticScene
from tests.manifest import sections
from tests.servers.s3 import S3Server, s3_bucket_in_environment
from tests.servers.stac_api import StacApiServer, pgstac_server

BUCKET = "sitsflow-test-profiles"
FIELD = "spec.sensors[0]"

# Raw arrays -> (valid, {band: physical values}) by hand, from the providers' definitions (the
# same rules as tests/catalog/test_generators.py and test_archive.py), independently of the
# profiles under test.
Hand = Callable[[SyntheticScene], tuple[np.ndarray, dict[str, np.ndarray]]]


def up(array: np.ndarray) -> np.ndarray:
    """A 20 m layer on the 10 m grid (nearest): each pixel becomes 2 x 2."""
    return np.repeat(np.repeat(array, 2, axis=0), 2, axis=1)


def sen2cor_by_hand(scene: SyntheticScene) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    raw = scene.raw
    bad = [gen.SCL_NODATA, gen.SCL_DEFECTIVE, gen.SCL_SHADOW, gen.SCL_CLOUD_MEDIUM]
    bad += [gen.SCL_CLOUD_HIGH, gen.SCL_CIRRUS]  # snow (11) is valid by default
    valid = ~np.isin(up(raw["scl"]), bad) & (raw["red"] != 0) & (raw["nir"] != 0)
    # Stored: reflectance * 10000 (+ 1000 from processing baseline 04.00 on, 2022-01-25).
    offset = 1000 if scene.datetime.date() >= date(2022, 1, 25) else 0
    values = {b: (raw[b].astype(np.float64) - offset) / 10000 for b in ("red", "nir")}
    return valid, values


def theia_by_hand(scene: SyntheticScene) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    raw = scene.raw
    saturation = (1 << 2) | (1 << 3)  # SAT_R1: B2 B3 B4 B8 are bits 0..3; red, nir read
    valid = (raw["CLM_R1"] == 0) & (raw["EDG_R1"] == 0) & ((raw["SAT_R1"] & saturation) == 0)
    return valid, {"red": raw["B04"] * 1e-4, "nir": raw["B08"] * 1e-4}


def landsat_oli_by_hand(scene: SyntheticScene) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    raw = scene.raw
    # QA_PIXEL: fill 0, dilated 1, cirrus 2, cloud 3, shadow 4; its file's no-data value is 1.
    # QA_RADSAT: band n saturated is bit n-1 (red B4, nir B5), terrain occlusion bit 11.
    saturation = (1 << 3) | (1 << 4) | (1 << 11)
    valid = ((raw["qa_pixel"] & 0b11111) == 0) & ((raw["qa_radsat"] & saturation) == 0)
    valid &= raw["qa_pixel"] != 1
    values = {b: raw[k] * 0.0000275 - 0.2 for b, k in (("red", "red"), ("nir", "nir08"))}
    return valid, values


@dataclass(frozen=True)
class Case:
    """One built-in profile: the generator, the catalog search and the hand-computed decoding."""

    profile: str
    write: Callable[[Path], list[SyntheticScene]]
    collection: str
    search: dict[str, Any]
    start: date
    end: date
    by_hand: Hand
    options: dict[str, str] | None = None


CASES = {
    "sen2cor-earth-search": Case(
        "sentinel2-l2a-sen2cor",
        lambda root: gen.sen2cor_l2a(root, seed=21, style="earth-search"),
        "sentinel-2-l2a",
        {"tiles": ["31TGK", "32TKQ"]},
        date(2022, 1, 1),
        date(2022, 2, 28),
        sen2cor_by_hand,
        {"snow": "valid"},
    ),
    "theia-l2a": Case(
        "sentinel2-l2a-theia",
        lambda root: gen.theia_l2a(root, seed=22),
        "sentinel2-l2a-theia",
        {"tiles": ["T31TGK", "T32TKQ"]},
        date(2018, 1, 1),
        date(2018, 1, 31),
        theia_by_hand,
    ),
    "landsat-c2-l2-oli": Case(
        "landsat-c2-l2-oli",
        lambda root: gen.landsat_c2_l2(root, seed=23, sensor="oli", keys="common"),
        "landsat-c2-l2",
        {"bbox": [5.0, 44.5, 7.0, 45.5]},  # WRS path/rows are not MGRS tiles: an area
        date(2022, 3, 1),
        date(2022, 4, 30),
        landsat_oli_by_hand,
    ),
}


def on_s3(scene: SyntheticScene, root: Path, put: Callable[[str, Path], str]) -> dict[str, Any]:
    """The scene's item as a catalog serves it, its COGs uploaded and its hrefs ``s3://``."""
    item = scene.item.to_dict(include_self_link=False, transform_hrefs=False)
    item["links"] = []
    for key, path in scene.files.items():
        assert Path(item["assets"][key]["href"]) == path.resolve()
        item["assets"][key]["href"] = put(path.resolve().relative_to(root).as_posix(), path)
    return item


def collection_of(collection_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    boxes = np.array([it["bbox"] for it in items])
    times = sorted(it["properties"]["datetime"] for it in items)
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": f"generated {collection_id} scenes",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[*boxes[:, :2].min(axis=0), *boxes[:, 2:].max(axis=0)]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [],
    }


@dataclass(frozen=True)
class Loaded:
    api: StacApiServer
    s3: S3Server
    scenes: dict[str, list[SyntheticScene]]  # by case
    served: dict[str, dict[str, Any]]  # item id -> the item dict loaded into the API


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    root = tmp_path_factory.mktemp("generated").resolve()
    scenes = {name: case.write(root / name) for name, case in CASES.items()}
    with s3_bucket_in_environment(BUCKET) as s3:
        client = boto3.client("s3", endpoint_url=s3.endpoint_url)

        def put(key: str, path: Path) -> str:
            client.upload_file(str(path), BUCKET, key)
            return f"s3://{BUCKET}/{key}"

        served = {
            s.item.id: on_s3(s, root, put) for name in CASES for s in scenes[name]
        }  # fmt: skip
        by_collection: dict[str, list[dict[str, Any]]] = {}
        for item in served.values():
            by_collection.setdefault(item["collection"], []).append(item)
        collections = [collection_of(c, items) for c, items in by_collection.items()]
        with pgstac_server(collections, list(served.values())) as api:
            yield Loaded(api, s3, scenes, served)


def profile_of(case: Case) -> SensorProfile:
    (profile,) = profile_by_name(case.profile).configure(
        "s", bands=["red", "nir"], options=case.options or {}
    )
    return profile


def decode(profile: SensorProfile, acquisition: Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """(bands, h, w) values and (h, w) validity on the item's own grid, as the cube reads them."""
    assert acquisition.grid is not None
    sensor = SensorCube(profile, (acquisition,), (), ())
    values, valid = read_sensor(sensor, acquisition.grid, RasterioReader())
    return values[0], valid[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(CASES))
def test_built_in_profile_through_pgstac_and_s3_decodes_by_hand(loaded: Loaded, name: str) -> None:
    case = CASES[name]
    profile = profile_of(case)
    spec = sections.catalog(
        kind="stac_api", url=loaded.api.url, collections=[case.collection], **case.search
    )
    acquisitions, items = find_acquisitions(spec, profile, case.start, case.end, field=FIELD)
    scenes = {s.item.id: s for s in loaded.scenes[name]}
    # Every generated scene of the period, and nothing else, is found through the API.
    assert sorted(a.item_id for a in acquisitions) == sorted(scenes)
    assert len({s.tile.tile for s in scenes.values()}) == 2  # two overlapping tiles, two zones
    by_id = {it.id: it for it in items}
    seen = {"invalid": False, "valid": False}
    for acquisition in acquisitions:
        scene = scenes[acquisition.item_id]
        # What the server answers is what was loaded: properties and per-asset projection.
        written = loaded.served[scene.item.id]
        answered = by_id[scene.item.id].to_dict(transform_hrefs=False)
        for key in ("proj:code", "proj:shape", "proj:transform", "s2:processing_baseline"):
            assert answered["properties"].get(key) == written["properties"].get(key), key
        for key, asset in written["assets"].items():
            got = answered["assets"][key]
            assert got["href"] == asset["href"] and got["href"].startswith(f"s3://{BUCKET}/")
            for field in ("proj:code", "proj:shape", "proj:transform"):
                assert got.get(field) == asset.get(field), (key, field)
        assert acquisition.grid is not None
        assert acquisition.grid.crs == scene.tile.crs
        assert acquisition.grid.transform == scene.tile.grid().transform
        # The pixels, read through /vsis3/, decode as computed by hand.
        hand_valid, hand_values = case.by_hand(scene)
        values, valid = decode(profile, acquisition)
        np.testing.assert_array_equal(valid, hand_valid, err_msg=scene.item.id)
        for b, band in enumerate(profile.band_names):
            np.testing.assert_allclose(
                values[b][hand_valid], hand_values[band][hand_valid], atol=1e-5,
                err_msg=f"{scene.item.id} {band}",
            )  # fmt: skip
        seen["invalid"] |= bool((~hand_valid).any())
        seen["valid"] |= bool(hand_valid.any())
    assert all(seen.values()), seen  # the data exercised the mask both ways


def test_both_sen2cor_baselines_keep_their_offset_through_pgstac(loaded: Loaded) -> None:
    """Scenes either side of 2022-01-25: 03.01 without the offset, 04.00 with it removed."""
    case = CASES["sen2cor-earth-search"]
    profile = profile_of(case)
    spec = sections.catalog(
        kind="stac_api", url=loaded.api.url, collections=[case.collection], **case.search
    )
    acquisitions, items = find_acquisitions(spec, profile, case.start, case.end, field=FIELD)
    baselines = {it.id: it.properties["s2:processing_baseline"] for it in items}
    assert set(baselines.values()) == {"03.01", "04.00"}
    scenes = {s.item.id: s for s in loaded.scenes["sen2cor-earth-search"]}
    red = profile.band_names.index("red")
    for acquisition in acquisitions:
        scene = scenes[acquisition.item_id]
        values, valid = decode(profile, acquisition)
        stored = scene.raw["red"][valid].astype(np.float64)
        shift = 1000 if baselines[acquisition.item_id] == "04.00" else 0
        # A dropped or rewritten baseline would leave a 0.1 reflectance error here.
        np.testing.assert_allclose(values[red][valid], (stored - shift) / 10000, atol=1e-6)
