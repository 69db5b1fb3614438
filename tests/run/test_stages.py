"""Stage digests: what must and must not change a unit's identity."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from pathlib import Path

from pipeline.catalog.sensors import BandRead, SensorProfile
from pipeline.cube.plan import plan_cube
from pipeline.model import Acquisition, AssetRef, GridSpec
from pipeline.stages import cube as cube_stage
from pipeline.stages.common import cube_identity, unsigned_href
from pipeline.storage import RunStore

GRID = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), 64, 64)
PROFILE = SensorProfile("s2", (BandRead("ndvi", "ndvi"),), (), 10)


def plan(href: str, chunk: int = 32, encoding: str = "int16") -> object:
    acquisition = Acquisition(
        "item-1", "s2", datetime(2017, 5, 1, tzinfo=UTC), {"ndvi": AssetRef(href)}, GRID
    )
    return plan_cube(GRID, [(PROFILE, [acquisition])], date(2017, 1, 1), date(2017, 12, 31),
                     [], chunk, encoding=encoding)  # fmt: skip


def cube_digests(cube: object) -> list[str]:
    store = cube_stage.digest("store", cube_identity(cube))  # type: ignore[arg-type]
    return [u.digest for u in cube_stage.cube_units(cube, store)]  # type: ignore[arg-type]


def test_a_re_signed_catalog_changes_no_digest() -> None:
    base = "https://pc.example.org/s2/T33/B04.tif"
    first = cube_digests(plan(base + "?st=2026-11-25&se=2026-11-26&sig=abc%2Bdef"))
    again = cube_digests(plan(base + "?st=2026-11-26&se=2026-11-27&sig=zzz"))
    assert first == again
    assert first != cube_digests(plan("https://pc.example.org/s2/T33/B08.tif"))
    assert unsigned_href(base + "?version=2") == base + "?version=2"  # not a signature


def test_chunking_changes_every_cube_unit() -> None:
    small = cube_digests(plan("/data/a.tif", 32))
    large = cube_digests(plan("/data/a.tif", 64))
    assert len(small) == 4 and len(large) == 1
    assert not set(small) & set(large)


def test_the_cube_encoding_changes_every_cube_unit() -> None:
    coded = cube_digests(plan("/data/a.tif"))
    floats = cube_digests(plan("/data/a.tif", encoding="float32"))
    assert len(coded) == len(floats) == 4
    assert not set(coded) & set(floats)


def test_leftovers_of_killed_writers_are_removed(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / ".labels.tif.tmp-1a2b3c4d").write_bytes(b"half")
    (tmp_path / "maps" / ".labels.tif.tmp-1a2b3c4d.gtiff").write_bytes(b"half")
    (tmp_path / ".model.tmp-0f0f0f0f").mkdir()
    (tmp_path / "cube.zarr" / "x").mkdir(parents=True)
    (tmp_path / "cube.zarr" / "x" / ".c.tmp-12345678").write_bytes(b"zarr's own business")
    (tmp_path / "maps" / "labels.tif").write_bytes(b"whole")
    removed = RunStore(tmp_path).remove_temporaries()
    assert removed == [
        ".model.tmp-0f0f0f0f",
        "maps/.labels.tif.tmp-1a2b3c4d",
        "maps/.labels.tif.tmp-1a2b3c4d.gtiff",
    ]
    assert (tmp_path / "maps" / "labels.tif").exists()
    assert (tmp_path / "cube.zarr" / "x" / ".c.tmp-12345678").exists()


def test_unit_payloads_are_small() -> None:
    cube = plan("/data/a.tif")
    for unit in cube_stage.cube_units(cube, cube_stage.digest("store", "x")):  # type: ignore[arg-type]
        index, window = unit.payload  # the tile's index and a Window, not the plan
        assert index == 0 and dataclasses.is_dataclass(window)
        assert len(repr(unit.payload)) < 100
