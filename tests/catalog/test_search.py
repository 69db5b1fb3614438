"""Discovery against a real STAC API: stac-fastapi-pgstac on PostgreSQL + PostGIS (127.0.0.1).

The server holds three overlapping Sentinel-2 tiles over six months and a Landsat collection; the
expected items of each search come from the scene table (tests/catalog/stac_fixtures.py), not
from the code under test. A proxy in front of the server breaks 30% of the requests to prove the
retries; a dead, a hanging and a garbage-answering API must fail fast with a clear message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from pipeline.catalog.config import CatalogConfig
from pipeline.catalog.items import discovery_fingerprint, load_saved_items, save_items
from pipeline.catalog.search import HttpSettings, RetryingStacApiIO, redact, search_items
from pipeline.catalog.sensors import BandRead, MaskRule, SensorProfile
from pipeline.catalog.static import find_acquisitions
from pipeline.errors import CatalogError
from tests.catalog.stac_fixtures import (
    LANDSAT_COLLECTION,
    S2_COLLECTION,
    SCENES,
    collection_dict,
    expected_ids,
    inside,
    local_writer,
    scene_item,
    write_scene_files,
)
from tests.manifest import sections
from tests.servers._process import free_port
from tests.servers.faulty_proxy import faulty_proxy
from tests.servers.stac_api import StacApiServer, pgstac_server

START, END = date(2020, 1, 1), date(2020, 12, 31)
FIELD = "spec.sensors[0]"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StacApiServer]:
    folder = tmp_path_factory.mktemp("scenes")
    hrefs = write_scene_files(SCENES, local_writer(folder))
    items = [scene_item(s, hrefs[s.item_id]) for s in SCENES]
    collections = [collection_dict(c, SCENES) for c in (S2_COLLECTION, LANDSAT_COLLECTION)]
    with pgstac_server(collections, items) as server:
        yield server


def spec(url: str, **fields: Any) -> CatalogConfig:
    fields.setdefault("collections", [S2_COLLECTION])
    if not {"bbox", "intersects", "tiles"} & fields.keys():
        fields["tiles"] = ["31TCJ", "31TCK", "31TDJ"]
    return sections.catalog(kind="stac_api", url=url, **fields)


def ids(spec_: CatalogConfig, start: date = START, end: date = END) -> list[str]:
    return [it.id for it in search_items(spec_, start, end, field=FIELD).items]


PROFILE = SensorProfile(
    name="s2",
    bands=(BandRead("red", "red", scale=1e-4), BandRead("nir", "nir", scale=1e-4)),
    masks=(MaskRule("scl", invalid_values=(3, 8, 9, 10)),),
    date_step_days=10,
)


# --- searches ------------------------------------------------------------------------------------


def test_bbox_and_dates(api: StacApiServer) -> None:
    found = ids(spec(api.url, bbox=inside("31TCJ")), date(2020, 2, 1), date(2020, 4, 30))
    assert found == expected_ids(tiles=["31TCJ"], start=date(2020, 2, 1), end=date(2020, 4, 30))
    assert len(found) == 3


def test_the_period_ends_with_its_last_day(api: StacApiServer) -> None:
    # Items at 10:30 on the last day are in the period.
    found = ids(spec(api.url, bbox=inside("31TCJ")), date(2020, 3, 5), date(2020, 3, 5))
    assert found == ["S2B_31TCJ_20200305_0_L2A"]


def test_tiles_keep_only_their_items_though_footprints_overlap(api: StacApiServer) -> None:
    # 31TCK overlaps 31TCJ by 9.8 km: the area search returns both; the tile id decides.
    result = search_items(spec(api.url, tiles=["T31TCK"]), START, END, field=FIELD)
    assert [it.id for it in result.items] == expected_ids(tiles=["31TCK"])
    assert result.matched > len(result.items)


def test_several_tiles(api: StacApiServer) -> None:
    found = ids(spec(api.url, tiles=["31TCJ", "31TDJ"]))
    assert found == expected_ids(tiles=["31TCJ", "31TDJ"])
    assert len(found) == 12


def test_intersects_polygon(api: StacApiServer) -> None:
    west, south, east, north = inside("31TDJ")
    polygon = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, south]]],
    }
    assert ids(spec(api.url, intersects=polygon)) == expected_ids(tiles=["31TDJ"])


def test_cloud_cover_is_filtered_on_the_server(api: StacApiServer) -> None:
    result = search_items(spec(api.url, max_cloud_cover=25), START, END, field=FIELD)
    assert [it.id for it in result.items] == expected_ids(max_cloud=25)
    assert result.matched == len(result.items)  # pgstac applied the CQL2 filter itself


def test_query_and_filter_are_sent_as_given(api: StacApiServer) -> None:
    query = {"eo:cloud_cover": {"lt": 10}}
    assert ids(spec(api.url, query=query)) == [
        s for s in expected_ids() if s in expected_ids(max_cloud=9.99)
    ]
    cql = {"op": "=", "args": [{"property": "eo:cloud_cover"}, 0]}
    assert ids(spec(api.url, filter=cql, max_cloud_cover=50)) == expected_ids(max_cloud=0)


def test_collections_are_searched_separately(api: StacApiServer) -> None:
    found = ids(spec(api.url, collections=[LANDSAT_COLLECTION], bbox=inside("31TCJ")))
    assert found == expected_ids(collection=LANDSAT_COLLECTION)


def test_pages_of_two_give_the_same_items(api: StacApiServer) -> None:
    one_page = search_items(spec(api.url), START, END, field=FIELD)
    small = search_items(spec(api.url, page_size=2), START, END, field=FIELD)
    assert [it.id for it in small.items] == [it.id for it in one_page.items]
    assert len(small.items) == 18
    assert small.requests >= one_page.requests + 8  # 18 items, 2 per page


def test_find_acquisitions_parses_what_the_api_returns(api: StacApiServer) -> None:
    acquisitions, items = find_acquisitions(
        spec(api.url, tiles=["31TCJ"]), PROFILE, START, END, field=FIELD
    )
    assert [a.item_id for a in acquisitions] == expected_ids(tiles=["31TCJ"])
    first = acquisitions[0]
    assert first.grid is not None and first.grid.crs == "EPSG:32631"  # asset-level proj fields
    assert first.grid.transform[2] == 300000.0 and first.grid.width == 16
    assert set(first.assets) == {"red", "nir", "scl"}
    assert first.assets["red"].href.endswith("31TCJ/20200105/red.tif")
    assert [it.id for it in items] == [a.item_id for a in acquisitions]


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_collection_is_named_with_a_suggestion(api: StacApiServer) -> None:
    with pytest.raises(CatalogError) as info:
        ids(spec(api.url, collections=["sentinel-2-l2"]))
    message = str(info.value)
    assert "no collection 'sentinel-2-l2'" in message
    assert "landsat-c2-l2, sentinel-2-l2a" in message  # what it has
    assert "did you mean 'sentinel-2-l2a'" in message
    assert f"{FIELD}.catalog.collections" in message


def test_nothing_found_names_the_search(api: StacApiServer) -> None:
    with pytest.raises(CatalogError) as info:
        ids(spec(api.url, tiles=["31TCJ"]), date(2021, 1, 1), date(2021, 3, 1))
    message = str(info.value)
    assert api.url in message and "no item" in message
    assert "tiles 31TCJ" in message and "2021-01-01 .. 2021-03-01" in message
    assert "Fix:" in message


def test_tile_without_items_says_which_tiles_were_seen(api: StacApiServer) -> None:
    # 31TDK touches 31TCK and 31TDJ at its corners: items are found nearby, none of the tile.
    with pytest.raises(CatalogError) as info:
        ids(spec(api.url, tiles=["31TDK"]))
    message = str(info.value)
    assert "none of them is of those tiles" in message
    assert "31TCK" in message and "tile_property" in message


def test_more_items_than_allowed(api: StacApiServer) -> None:
    with pytest.raises(CatalogError, match=r"matches more than 5 items.*max_items"):
        ids(spec(api.url, max_items=5))


def test_a_wrong_path_is_a_404_with_a_fix(api: StacApiServer) -> None:
    with pytest.raises(CatalogError) as info:
        ids(spec(f"{api.url}/not-the-api"))
    assert "HTTP 404" in str(info.value)
    assert "the API's root" in str(info.value)


@pytest.mark.timeout(30)
def test_dead_api_fails_fast_with_the_url_and_a_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(CatalogError) as info:
        ids(spec(url, retries=3, backoff_s=0.2))
    message = str(info.value)
    assert url in message
    assert "connection refused" in message
    assert "4 attempt(s)" in message
    assert f"Fix: check {FIELD}.catalog.url" in message and "retries" in message


@pytest.mark.timeout(30)
def test_hanging_api_fails_after_its_timeouts() -> None:
    with faulty_proxy(mode="hang") as proxy, pytest.raises(CatalogError) as info:
        ids(spec(proxy.url, timeout_s=0.5, retries=1, backoff_s=0.1))
    message = str(info.value)
    assert proxy.url in message
    assert "no answer within 0.5 s" in message and "2 attempt(s)" in message


def test_garbage_answers_are_named() -> None:
    with faulty_proxy(mode="garbage") as proxy, pytest.raises(CatalogError) as info:
        ids(spec(proxy.url))
    message = str(info.value)
    assert "garbage" in message and "not JSON" in message and "<html>" in message
    assert "login page" in message


# --- transient failures ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_discovery_completes_when_30_percent_of_requests_fail(api: StacApiServer) -> None:
    direct = ids(spec(api.url, page_size=1))
    with faulty_proxy(api.url, fail_rate=0.3, seed=24, slow_s=2.0, retry_after_s=1) as proxy:
        result = search_items(
            spec(proxy.url, page_size=1, timeout_s=0.5, retries=8, backoff_s=0.05),
            START, END, field=FIELD,
        )  # fmt: skip
        stats = proxy.stats()
    assert [it.id for it in result.items] == direct
    # The run really went through about 30% failures, of every kind (the seed fixes which).
    assert 0.2 <= stats["faults"] / stats["requests"] <= 0.45, stats
    assert all(stats.get(kind) for kind in ("500", "502", "503", "429", "slow", "drop")), stats
    assert result.requests == stats["requests"]  # every failed attempt was retried


def test_without_retries_the_same_faults_stop_discovery(api: StacApiServer) -> None:
    # The control of the test above: same proxy and seed, no retries.
    faults = faulty_proxy(api.url, fail_rate=0.3, seed=24, slow_s=2.0)
    expected = pytest.raises(CatalogError, match=r"did not answer.*1 attempt\(s\)")
    with faults as proxy, expected:
        search_items(
            spec(proxy.url, page_size=1, timeout_s=0.5, retries=0), START, END, field=FIELD
        )


def test_errors_that_retrying_cannot_fix_are_not_retried(api: StacApiServer) -> None:
    io = RetryingStacApiIO(HttpSettings(retries=5, backoff_s=10))
    with pytest.raises(Exception, match="HTTP 404"):
        io.request(f"{api.url}/collections/nope")
    assert io.attempts == 1  # no back-off wait either


# --- the saved item list --------------------------------------------------------------------------


def test_a_repeated_run_reuses_the_saved_list_without_the_api(
    api: StacApiServer, tmp_path: Path
) -> None:
    saved = tmp_path / "items" / "s2.json"
    with faulty_proxy(api.url, fail_rate=0.0) as proxy:
        catalog = spec(proxy.url, tiles=["31TCK"], max_cloud_cover=30)
        first, items = find_acquisitions(catalog, PROFILE, START, END, field=FIELD, saved=saved)
        save_items(items, saved, fingerprint=discovery_fingerprint(catalog, START, END))
        asked = proxy.stats()["requests"]
        assert asked > 0
    # The API is gone now: without the saved list, discovery fails ...
    with pytest.raises(CatalogError, match="connection refused"):
        find_acquisitions(replace(catalog, retries=0), PROFILE, START, END,
                          field=FIELD)  # fmt: skip
    # ... with it, the same acquisitions come back (request settings may differ).
    again, again_items = find_acquisitions(
        replace(catalog, retries=0, timeout_s=1.0), PROFILE, START, END,
        field=FIELD, saved=saved,
    )  # fmt: skip
    assert again == first
    assert [it.id for it in again_items] == [it.id for it in load_saved_items(saved).items]
    assert [a.item_id for a in again] == expected_ids(tiles=["31TCK"], max_cloud=30)


def test_redact_hides_credentials_in_urls() -> None:
    url = "https://user:secret@stac.example.com:8443/v1/search?token=abc&x=1"
    assert redact(url) == "https://stac.example.com:8443/v1/search?token=...&x=..."
