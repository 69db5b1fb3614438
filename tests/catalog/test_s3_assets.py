"""COG assets on an S3 API server (moto, 127.0.0.1) found through every catalog kind and read
by the production reader through GDAL's /vsis3/, in this process and on dask worker processes.

``s3://bucket/key`` hrefs need no translation in sitsflow: rasterio maps them to GDAL's
``/vsis3/bucket/key``. The endpoint and the credentials reach GDAL (and s3fs, which reads catalog
files) through the process environment only: they are never in an item, a task or a message.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import numpy as np
import pystac
import pytest
from distributed import Client

from pipeline.catalog.sensors import BandRead, MaskRule, SensorProfile
from pipeline.catalog.static import find_acquisitions
from pipeline.cube.read import RasterioReader
from pipeline.errors import CatalogError
from pipeline.model import Acquisition, GridSpec
from tests.catalog.stac_fixtures import (
    S2_COLLECTION,
    SCENES,
    Scene,
    collection_dict,
    expected_ids,
    scene_item,
    write_scene_files,
)
from tests.manifest import sections
from tests.servers.dask_cluster import dask_cluster
from tests.servers.s3 import SECRET_KEY, S3Server, s3_bucket_in_environment
from tests.servers.stac_api import StacApiServer, pgstac_server

REPO = Path(__file__).resolve().parents[2]
BUCKET = "sitsflow-test-cogs"
START, END = date(2020, 1, 1), date(2020, 12, 31)
FIELD = "spec.sensors[0]"
TILE_SCENES = [s for s in SCENES if s.tile == "31TCJ" and s.collection == S2_COLLECTION]
PROFILE = SensorProfile(
    name="s2",
    bands=(BandRead("red", "red"), BandRead("nir", "nir")),
    masks=(MaskRule("scl", invalid_values=(9,)),),
    date_step_days=10,
)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    import s3fs

    # fsspec caches filesystems by their arguments, not by the endpoint in the environment: one
    # made against an earlier module's (now stopped) server would be handed back here
    s3fs.S3FileSystem.clear_instance_cache()
    with s3_bucket_in_environment(BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def hrefs(s3: S3Server) -> dict[str, dict[str, str]]:
    client = boto3.client("s3", endpoint_url=s3.endpoint_url)

    def put(key: str, data: bytes) -> str:
        client.put_object(Bucket=BUCKET, Key=f"cogs/{key}", Body=data)
        return f"s3://{BUCKET}/cogs/{key}"

    return write_scene_files(TILE_SCENES, put)


@pytest.fixture(scope="module")
def api(hrefs: dict[str, dict[str, str]]) -> Iterator[StacApiServer]:
    items = [scene_item(s, hrefs[s.item_id]) for s in TILE_SCENES]
    with pgstac_server([collection_dict(S2_COLLECTION, TILE_SCENES)], items) as server:
        yield server


def assert_pixels_are_the_scenes(acquisitions: list[Acquisition]) -> None:
    reader = RasterioReader()
    scenes = {s.item_id: s for s in TILE_SCENES}
    for acquisition in acquisitions:
        scene: Scene = scenes[acquisition.item_id]
        assert acquisition.grid is not None
        for asset in ("red", "nir", "scl"):
            href = acquisition.assets[asset].href
            assert href.startswith(f"s3://{BUCKET}/")
            pixels = reader.read(href, 1, acquisition.grid)
            np.testing.assert_array_equal(pixels, scene.values(asset).astype(np.float32))


def test_stac_api_items_with_s3_assets_are_read_through_vsis3(api: StacApiServer) -> None:
    spec = sections.catalog(
        kind="stac_api", url=api.url, collections=[S2_COLLECTION], tiles=["31TCJ"]
    )
    acquisitions, _ = find_acquisitions(spec, PROFILE, START, END, field=FIELD)
    assert [a.item_id for a in acquisitions] == expected_ids(tiles=["31TCJ"])
    assert_pixels_are_the_scenes(acquisitions)


def test_static_catalog_on_s3(
    s3: S3Server, hrefs: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    catalog = pystac.Catalog("s3-catalog", "scenes on S3")
    collection = pystac.Collection.from_dict(collection_dict(S2_COLLECTION, TILE_SCENES))
    catalog.add_child(collection)
    for scene in TILE_SCENES:
        collection.add_item(pystac.Item.from_dict(scene_item(scene, hrefs[scene.item_id])))
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    client = boto3.client("s3", endpoint_url=s3.endpoint_url)
    for path in (tmp_path / "catalog").rglob("*.json"):
        key = f"catalog/{path.relative_to(tmp_path / 'catalog')}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    spec = sections.catalog(url=f"s3://{BUCKET}/catalog/catalog.json", max_cloud_cover=20)
    acquisitions, _ = find_acquisitions(spec, PROFILE, START, END, field=FIELD)
    assert [a.item_id for a in acquisitions] == expected_ids(tiles=["31TCJ"], max_cloud=20)
    assert_pixels_are_the_scenes(acquisitions)


def test_item_collection_on_s3_with_relative_asset_hrefs(
    s3: S3Server, hrefs: dict[str, dict[str, str]]
) -> None:
    features = []
    for scene in TILE_SCENES:
        relative = {
            k: "../" + v.removeprefix(f"s3://{BUCKET}/") for k, v in hrefs[scene.item_id].items()
        }
        features.append(scene_item(scene, relative))
    body = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    client = boto3.client("s3", endpoint_url=s3.endpoint_url)
    client.put_object(Bucket=BUCKET, Key="lists/items.json", Body=body)
    spec = sections.catalog(kind="item_collection", url=f"s3://{BUCKET}/lists/items.json")
    acquisitions, _ = find_acquisitions(spec, PROFILE, date(2020, 2, 1), END, field=FIELD)
    assert [a.item_id for a in acquisitions] == expected_ids(tiles=["31TCJ"])[1:]
    assert_pixels_are_the_scenes(acquisitions)


def test_missing_s3_object_is_named(s3: S3Server) -> None:
    scene = TILE_SCENES[0]
    grid = GridSpec(f"EPSG:{scene.epsg}", scene.pixel_transform(), 16, 16)
    href = f"s3://{BUCKET}/cogs/missing/red.tif"
    with pytest.raises(CatalogError) as info:
        RasterioReader().read(href, 1, grid)
    assert href in str(info.value) and "Fix:" in str(info.value)
    assert SECRET_KEY not in str(info.value)


def _read_on_worker(href: str, grid: object) -> np.ndarray:
    return RasterioReader().read(href, 1, grid)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_dask_workers_read_s3_with_settings_from_their_environment(
    api: StacApiServer, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sections.catalog(
        kind="stac_api", url=api.url, collections=[S2_COLLECTION], tiles=["31TCJ"]
    )
    acquisitions, _ = find_acquisitions(spec, PROFILE, START, END, field=FIELD)
    tasks = [(a.assets["nir"].href, a.grid) for a in acquisitions]
    # Nothing that travels to a worker holds a credential.
    assert SECRET_KEY.encode() not in pickle.dumps((acquisitions, tasks))
    # The worker processes inherit the S3 settings from the environment they start in.
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers run this test module's function
    with dask_cluster(n_workers=1) as cluster, Client(cluster.address, timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        endpoints = client.run(lambda: os.environ.get("AWS_S3_ENDPOINT"))
        assert set(endpoints.values()) == {f"127.0.0.1:{s3.port}"}
        futures = [client.submit(_read_on_worker, href, grid, pure=False) for href, grid in tasks]
        results = client.gather(futures)
    scenes = {s.item_id: s for s in TILE_SCENES}
    for acquisition, pixels in zip(acquisitions, results, strict=True):
        expected = scenes[acquisition.item_id].values("nir").astype(np.float32)
        np.testing.assert_array_equal(pixels, expected)
