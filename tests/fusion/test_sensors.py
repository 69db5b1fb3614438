"""Fusion sources on one sensor's features: the manifest's rules (exactly one kind, a sensor of
the run, two or more sources), the columns a sensor's model reads (its variables, its feature
columns in the cube's order, the same values as the whole block's rows), what the plan refuses,
and the digest of a source left without a sensor (existing stores keep their fusion units)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.cube.build import CubeChunkTask, build_chunk
from pipeline.cube.plan import CubePlan, plan_cube
from pipeline.cube.store import create_cube_store
from pipeline.errors import InputDataError, ManifestError
from pipeline.fusion.config import FusionSourceConfig
from pipeline.fusion.sensors import sensor_columns
from pipeline.predict.blockwise import read_block
from pipeline.run.units import canonical
from tests.cube.synthetic import make_series
from tests.test_manifest import demo_data, parse


def _two_sensors(sources: list[dict[str, Any]]) -> dict[str, Any]:
    data = demo_data()
    spec = data["spec"]
    monthly = copy.deepcopy(spec["sensors"][0])
    monthly.update(name="s2m", date_step_days=30)
    spec["sensors"].append(monthly)
    spec["fusion"] = {"sources": sources}
    return data


def test_a_sensor_of_the_run_is_a_source() -> None:
    manifest = parse(_two_sensors([{"sensor": "s2"}, {"sensor": "s2m"}, {"run": 0}]))
    assert manifest.spec.fusion is not None
    labels = [s.label for s in manifest.spec.fusion.sources]
    assert labels == ["sensor-s2", "sensor-s2m", "run-0"]


@pytest.mark.parametrize(
    ("sources", "words"),
    [
        ([{"sensor": "s1"}, {"sensor": "s2"}], "'s1' is not a sensor of this run"),
        ([{"sensor": "s2"}], "at least 2 items"),
        ([{"sensor": "s2", "run": 0}, {"run": 1}], "give exactly one of run, sensor or store"),
        ([{"sensor": "S-1"}, {"run": 0}], "sensor"),
        ([{"sensor": "s2"}, {"sensor": "s2"}], "appear more than once"),
    ],
)
def test_the_manifest_refuses(sources: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse(_two_sensors(sources))
    message = str(info.value)
    assert "spec.fusion" in message
    assert words in message
    assert "Fix:" in message or ";" in message  # every problem says how to fix it


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> CubePlan:
    root = tmp_path_factory.mktemp("sensor-series")
    s2 = make_series(root, size=40, n_dates=3, name="s2", seed=3)
    l8 = make_series(
        root, size=40, n_dates=3, name="l8", first_day=8, step=23, seed=4, date_step_days=16,
        resolution=20.0,
    )  # fmt: skip
    return plan_cube(
        s2.grid, [(s.profile, s.acquisitions) for s in (s2, l8)], date(2021, 1, 1),
        date(2021, 3, 31), ["ndvi"], 32,
    )  # fmt: skip


def test_a_sensors_columns_are_its_own_in_the_cubes_order(cube: CubePlan, tmp_path: Path) -> None:
    whole = cube.feature_names
    for sensor in ("s2", "l8"):
        columns = sensor_columns(cube, sensor)
        mine = [n for n in whole if n.startswith(f"{sensor}_")]
        assert list(columns.features) == mine and mine
        assert all(
            v.startswith(f"{sensor}_") and t == f"{sensor}_time" for v, t in columns.variables
        )
    s2, l8 = sensor_columns(cube, "s2"), sensor_columns(cube, "l8")
    assert list(s2.features + l8.features) == whole  # nothing left out, nothing twice
    # A chunk read with a sensor's variables is the whole block's rows of its columns.
    store = str(tmp_path / "cube.zarr")
    create_cube_store(cube, store)
    window = cube.windows[0]
    build_chunk(CubeChunkTask(cube, window, store))
    block = read_block(store, cube.time_series_variables, window, 0)
    index = [whole.index(n) for n in l8.features]
    part = read_block(store, l8.variables, window, 0)
    assert part.shape[0] == len(l8.features) and np.isfinite(part).any()
    np.testing.assert_array_equal(part, block[index])


def test_a_sensor_split_by_orbit_is_both_its_series(cube: CubePlan) -> None:
    s2, l8 = cube.sensors
    asc = dataclasses.replace(l8, profile=dataclasses.replace(l8.profile, name="s1_asc"))
    split = dataclasses.replace(cube, sensors=(s2, asc))
    columns = sensor_columns(split, "s1")
    assert columns.features and all(n.startswith("s1_asc_") for n in columns.features)
    assert [v for v, _ in columns.variables] == list(asc.variables)


def test_the_plan_refuses_a_sensor_not_in_the_cube(cube: CubePlan) -> None:
    with pytest.raises(InputDataError, match=r"'s1' is not in this run's cube") as info:
        sensor_columns(cube, "s1")
    assert info.value.fix and info.value.field == "fusion.sources"
    alone = CubePlan(cube.grid, cube.sensors[:1], cube.chunk_size)
    with pytest.raises(InputDataError, match="the run's only sensor") as info:
        sensor_columns(alone, "s2")
    assert "run: 0" in str(info.value.fix)


def test_a_source_without_a_sensor_keeps_its_digest() -> None:
    # The digest form before sensor sources existed: run, store, name.
    before = {"__type__": "FusionSourceConfig", "run": 0, "store": None, "name": None}
    assert canonical(FusionSourceConfig(run=0)) == before
    assert canonical(FusionSourceConfig(sensor="s1"))["sensor"] == "s1"
