"""Catalogs and COG reads against real misbehaving HTTP servers on 127.0.0.1, bounded in time.

Each case ends within ``(retries + 1) * timeout_s`` plus the back-off waits and a small margin,
with a CatalogError that names the URL and a fix; a server that echoes the request's headers
leaks no credential, whole or in part, into the message.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import pytest

from pipeline.catalog.config import BandConfig, SensorConfig
from pipeline.catalog.search import search_items
from pipeline.catalog.sensors import sensor_profiles
from pipeline.catalog.static import open_catalog
from pipeline.cube.build import read_sensor
from pipeline.cube.plan import SensorCube
from pipeline.cube.read import DatasetCache, HttpLimits, RasterioReader
from pipeline.errors import CatalogError
from pipeline.model import Acquisition, AssetRef, GridSpec
from tests.manifest import sections
from tests.servers.misbehaving_http import misbehaving_server

TIMEOUT_S = 1.0
RETRIES = 1
BACKOFF_S = 0.1
MARGIN_S = 1.5  # process scheduling on two shared cores, back-off waits
BOUND_S = (RETRIES + 1) * TIMEOUT_S + MARGIN_S
START, END = date(2024, 1, 1), date(2024, 12, 31)


def _api(url: str, **fields: Any) -> Any:
    return sections.catalog(
        kind="stac_api", url=url, collections=["s2"], bbox=[0, 0, 1, 1],
        timeout_s=TIMEOUT_S, retries=RETRIES, backoff_s=BACKOFF_S, **fields,
    )  # fmt: skip


def _timed(call: Any) -> tuple[CatalogError, float]:
    started = time.monotonic()
    with pytest.raises(CatalogError) as info:
        call()
    return info.value, time.monotonic() - started


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("drip", ["no complete answer within 1 s", "2 attempt(s)"]),
        ("drip-headers", ["no complete answer within 1 s", "2 attempt(s)"]),
        ("hang", ["no answer within 1 s", "2 attempt(s)"]),
        ("5xx", ["HTTP 503", "2 attempt(s)"]),
    ],
)
def test_a_stac_search_ends_within_its_bound(mode: str, words: list[str]) -> None:
    with misbehaving_server(mode, chunk=10, interval_s=0.3) as server:
        error, elapsed = _timed(lambda: search_items(_api(server.url), START, END, field="s"))
        hits = server.hits()
    message = str(error)
    assert elapsed < BOUND_S, (mode, elapsed, message)
    assert server.url in message and "Fix:" in message and "retries" in message
    for word in words:
        assert word in message, (word, message)
    assert hits == RETRIES + 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["drip", "drip-headers", "hang"])
def test_a_static_catalog_over_http_ends_within_its_bound(mode: str) -> None:
    with misbehaving_server(mode, chunk=10, interval_s=0.3) as server:
        spec = sections.catalog(
            url=f"{server.url}/catalog.json", timeout_s=TIMEOUT_S, retries=RETRIES,
            backoff_s=BACKOFF_S,
        )  # fmt: skip
        error, elapsed = _timed(lambda: open_catalog(spec, field="sensors[0].catalog.url"))
    assert elapsed < BOUND_S, (mode, elapsed, str(error))
    assert "cannot be read" in str(error) and "2 attempt(s)" in str(error)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["drip", "hang", "5xx"])
def test_a_cog_read_ends_within_its_bound(mode: str) -> None:
    limits = HttpLimits(timeout_s=2, retries=1)
    grid = GridSpec(crs="EPSG:32633", transform=(10.0, 0, 500000.0, 0, -10.0, 5100000.0),
                    width=8, height=8)  # fmt: skip
    reader = RasterioReader(http=limits)
    with misbehaving_server(mode, chunk=10, interval_s=0.3) as server:
        href = f"/vsicurl/{server.url}/{mode}/B04.tif"
        error, elapsed = _timed(lambda: reader.read(href, 1, grid))
    # GDAL's own retry waits (GDAL_HTTP_RETRY_DELAY 0.5 s, doubled) come on top.
    bound = (limits.retries + 1) * limits.timeout_s + 2 * MARGIN_S
    assert elapsed < bound, (mode, elapsed, str(error))
    assert "cannot read" in str(error) and "Fix:" in str(error)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["drip", "hang"])
def test_a_sensors_timeout_bounds_the_cube_reads_of_its_files(mode: str) -> None:
    # The reader the cube stage makes (no limits of its own) takes the sensor's catalog
    # timeout_s / retries: a COG that never arrives stops the chunk within their bound.
    sensor = SensorConfig(
        "s2",
        sections.catalog(url="catalog.json", timeout_s=2, retries=1),
        bands={"red": BandConfig(asset="B04")},
    )
    (profile,) = sensor_profiles(sensor)
    assert (profile.read_timeout_s, profile.read_retries) == (2, 1)
    grid = GridSpec(crs="EPSG:32633", transform=(10.0, 0, 500000.0, 0, -10.0, 5100000.0),
                    width=8, height=8)  # fmt: skip
    with misbehaving_server(mode, chunk=10, interval_s=0.3) as server:
        href = f"/vsicurl/{server.url}/{mode}/sensor-B04.tif"
        acquisition = Acquisition(
            "item", "s2", datetime(2024, 5, 1, tzinfo=UTC), {"B04": AssetRef(href)}
        )
        cube = SensorCube(profile, (acquisition,), (date(2024, 5, 1),), ())
        error, elapsed = _timed(lambda: read_sensor(cube, grid, RasterioReader(DatasetCache())))
        hits = server.hits()
    bound = (1 + 1) * 2 + 2 * MARGIN_S  # (retries + 1) x timeout_s, GDAL's retry wait on top
    assert elapsed < bound, (mode, elapsed, str(error))
    assert "cannot read" in str(error) and "Fix:" in str(error)
    assert hits >= 2  # the retry was made: the sensor's retries, not GDAL's default of none


SECRET_TOKEN = "FAKE-SECRET-7f3a9c1e5b"


@pytest.mark.timeout(60)
def test_a_401_echoing_the_headers_leaks_no_part_of_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A variable whose name does not look secret: it is a credential because it feeds a header.
    monkeypatch.setenv("CATALOG_HEADER_VALUE", f"Bearer {SECRET_TOKEN}")
    with misbehaving_server("echo-401") as server:
        spec = _api(server.url, headers_from_env={"Authorization": "CATALOG_HEADER_VALUE"})
        error, elapsed = _timed(lambda: search_items(spec, START, END, field="s"))
    message = str(error)
    assert elapsed < BOUND_S
    assert "HTTP 401" in message and "headers_from_env" in message
    assert SECRET_TOKEN not in message and "FAKE-SECRET" not in message
    assert "***" in message
