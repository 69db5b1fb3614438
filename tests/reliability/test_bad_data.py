"""Bad data found at planning (``pipeline.catalog.assets``), on real GeoTIFFs written here, and
the messages of issue 17: retries logged at info level, credentials masked in part, the memory
estimate of a chunk larger than the image."""

from __future__ import annotations

import io
import logging
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from pipeline.catalog.assets import check_acquisitions
from pipeline.errors import CatalogError
from pipeline.model import Acquisition, AssetRef, GridSpec
from pipeline.warnings import CatalogWarning, DataQualityWarning

UTM = "EPSG:32633"
GRID = GridSpec(UTM, (10.0, 0.0, 500000.0, 0.0, -10.0, 5100000.0), 16, 16)


def _tif(path: Path, *, crs: str = UTM, origin: tuple[float, float] = (500000.0, 5100000.0),
         nodata_only: bool = False) -> str:  # fmt: skip
    data = np.full((16, 16), -32768 if nodata_only else 1200, dtype="int16")
    with rasterio.open(
        path, "w", driver="GTiff", width=16, height=16, count=1, dtype="int16", crs=crs,
        transform=from_origin(*origin, 10.0, 10.0), nodata=-32768,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    return str(path)


def _acquisition(item: str, href: str, grid: GridSpec = GRID) -> Acquisition:
    return Acquisition(item, "s2", datetime(2024, 5, 1), {"ndvi": AssetRef(href)}, grid)


def _item(item: str) -> pystac.Item:
    return pystac.Item(item, None, None, datetime(2024, 5, 1), {})


def test_a_missing_file_stops_with_the_item_the_file_and_the_fix(tmp_path: Path) -> None:
    good = _acquisition("good", _tif(tmp_path / "good.tif"))
    gone = _acquisition("gone", str(tmp_path / "gone.tif"))
    with pytest.raises(CatalogError) as info:
        check_acquisitions([good, gone], [_item("good"), _item("gone")], field="sensors[0]")
    message = str(info.value)
    assert info.value.field == "sensors[0].catalog"
    assert "item 'gone'" in message and "gone.tif' does not exist" in message
    assert "on_bad_item: skip" in message and "Fix:" in message


def test_skip_leaves_bad_items_out_and_says_which(tmp_path: Path) -> None:
    good = _acquisition("good", _tif(tmp_path / "good.tif"))
    gone = _acquisition("gone", str(tmp_path / "gone.tif"))
    broken_path = tmp_path / "broken.tif"
    broken_path.write_bytes(b"not a tiff")
    broken = _acquisition("broken", str(broken_path))
    items = [_item("good"), _item("gone"), _item("broken")]
    with pytest.warns(CatalogWarning, match="2 item"):
        kept, kept_items, skipped = check_acquisitions(
            [good, gone, broken], items, on_bad_item="skip", field="sensors[0]"
        )
    assert [a.item_id for a in kept] == ["good"] and [i.id for i in kept_items] == ["good"]
    assert {s.item for s in skipped} == {"gone", "broken"}
    assert "cannot be read" in next(s.problem for s in skipped if s.item == "broken")


def test_a_file_in_another_crs_than_its_item_is_warned_about(tmp_path: Path) -> None:
    moved = _acquisition("moved", _tif(tmp_path / "m.tif", crs="EPSG:3857"))
    shifted = _acquisition("shifted", _tif(tmp_path / "s.tif", origin=(500500.0, 5100000.0)))
    with pytest.warns(CatalogWarning) as caught:
        kept, _, skipped = check_acquisitions(
            [moved, shifted], [_item("moved"), _item("shifted")], field="sensors[0]"
        )
    text = " ".join(str(w.message) for w in caught)
    assert "EPSG:3857" in text and UTM in text and "starts at" in text
    assert len(kept) == 2 and skipped == []


def test_an_all_nodata_acquisition_is_warned_about(tmp_path: Path) -> None:
    empty = _acquisition("empty", _tif(tmp_path / "e.tif", nodata_only=True))
    full = _acquisition("full", _tif(tmp_path / "f.tif"))
    with pytest.warns(DataQualityWarning, match="hold no data at all.*empty"):
        check_acquisitions([empty, full], [_item("empty"), _item("full")], field="sensors[0]")


def test_never_checks_nothing_and_good_files_say_nothing(tmp_path: Path) -> None:
    gone = _acquisition("gone", str(tmp_path / "gone.tif"))
    kept, _, _ = check_acquisitions([gone], [_item("gone")], check_files="never", field="s")
    assert kept == [gone]
    good = _acquisition("good", _tif(tmp_path / "good.tif"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_acquisitions([good], [_item("good")], field="s")


def test_header_reads_are_skipped_above_the_limit_unless_asked(tmp_path: Path) -> None:
    reads: list[str] = []

    def header(href: str) -> object:
        reads.append(href)
        from pipeline.catalog.assets import _header

        return _header(href)

    href = _tif(tmp_path / "a.tif")
    many = [_acquisition(f"i{n}", href if n == 0 else f"{href}?{n}") for n in range(120)]
    check_acquisitions(many, [], check_files="auto", field="s", exists=lambda h: True,
                       header=header)  # fmt: skip
    assert reads == []  # 120 distinct files: only their existence is checked
    check_acquisitions(many[:1], [], check_files="always", field="s", header=header)
    assert reads == [href]


# --- messages ------------------------------------------------------------------------------------


def test_stac_retries_are_logged_at_info_level_with_their_cause() -> None:
    from pipeline.catalog.search import search_items
    from pipeline.run.logs import RunLog, bridge_logging
    from tests.manifest import sections
    from tests.servers.misbehaving_http import misbehaving_server

    stream = io.StringIO()
    log = RunLog("json", stream=stream)
    bridge_logging(log)
    try:
        with misbehaving_server("5xx") as server:
            spec = sections.catalog(
                kind="stac_api", url=server.url, collections=["s2"], bbox=[0, 0, 1, 1],
                timeout_s=1, retries=2, backoff_s=0.05,
            )  # fmt: skip
            with pytest.raises(CatalogError):
                search_items(spec, datetime(2024, 1, 1).date(), datetime(2024, 2, 1).date(),
                             field="s")  # fmt: skip
    finally:
        for name in ("distributed", "pipeline"):
            logging.getLogger(name).handlers.clear()
    lines = [line for line in stream.getvalue().splitlines() if "retry" in line]
    assert len(lines) == 2, stream.getvalue()
    assert all('"level": "info"' in line and "HTTP 503" in line for line in lines)


def test_credentials_are_masked_whole_and_in_part() -> None:
    from pipeline import secrets
    from pipeline.errors import SitsflowError
    from pipeline.run.logs import Redactor

    env = {"GDAL_HTTP_BEARER": "bearer-tok-123456", "PLAIN": "nothing-secret-here"}
    redact = Redactor.from_environment(env)
    text = "sent bearer-tok-123456 and bearer-tok-123456x, kept nothing-secret-here"
    assert redact(text) == "sent *** and ***x, kept nothing-secret-here"
    secrets.register("Basic dXNlcjpwYXNzd29yZDEyMw==")
    error = SitsflowError("the server said: token dXNlcjpwYXNzd29yZDEyMw== refused", fix="x")
    assert "dXNlcjpwYXNzd29yZDEyMw" not in str(error) and "***" in str(error)
    assert "Basic" in redact("Basic auth")  # a scheme word alone is not a secret


def test_a_chunk_larger_than_the_image_is_estimated_at_the_image_size() -> None:
    from types import SimpleNamespace

    from pipeline.cube.plan import CubePlan

    grid = GridSpec(UTM, (10.0, 0.0, 500000.0, 0.0, -10.0, 5100000.0), 100, 101)
    sensor = SimpleNamespace(
        acquisitions=[None] * 36, profile=SimpleNamespace(bands=[None]), dates=[None] * 37,
        variables=["ndvi"], encodings=lambda encoding: {"ndvi": None},
    )  # fmt: skip
    clipped = CubePlan(grid, (sensor,), 8192)  # type: ignore[arg-type]
    exact = CubePlan(grid, (sensor,), 101)  # type: ignore[arg-type]
    assert clipped.chunk_side == 101
    assert clipped.bytes_per_chunk() == exact.bytes_per_chunk() < 20 * 2**20
