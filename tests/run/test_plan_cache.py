"""The plan cache: planning products kept in the run store for --resume, keyed by content."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.affinity import translate
from shapely.geometry import box

from pipeline.manifest import RunManifest, load_manifest, resolve
from pipeline.model import GridSpec
from pipeline.run.plan_cache import FOLDER, PlanCache, cached_burn, code_digest
from pipeline.run.runner import RunPlan, plan_run
from pipeline.samples.reference import burn_features
from pipeline.storage import RunStore
from pipeline.warnings import SamplingWarning
from tests.run.helpers import demo_manifest

Change = Callable[[gpd.GeoDataFrame, np.ndarray, GridSpec], tuple[Any, ...]]
GRID = GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000640.0), 64, 64)


def _parcels() -> gpd.GeoDataFrame:
    shapes = [
        box(500000 + 40 * i, 5000100 + 30 * i, 500150 + 40 * i, 5000300 + 30 * i) for i in range(6)
    ]  # fmt: skip  (overlapping: some pixels are shared)
    return gpd.GeoDataFrame({"code": range(6)}, geometry=shapes, crs=GRID.crs)


class CountingBurn:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, frame: gpd.GeoDataFrame, ids: np.ndarray, grid: GridSpec
    ) -> tuple[np.ndarray, int]:
        self.calls += 1
        return burn_features(frame, ids, grid)


def test_a_burn_is_computed_once_and_read_back_equal(tmp_path: Path) -> None:
    store, frame, ids = RunStore(tmp_path), _parcels(), np.arange(6, dtype=np.int32)
    counting = CountingBurn()
    first = PlanCache(store)
    expected, shared = cached_burn(first, counting)(frame, ids, GRID)
    assert counting.calls == 1 and shared > 0
    assert not store.list_names(FOLDER)  # planning writes nothing
    first.flush()
    again = PlanCache(store)
    got, got_shared = cached_burn(again, counting)(frame, ids, GRID)
    assert counting.calls == 1 and (again.hits, again.misses) == (1, 0)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == expected.dtype and got_shared == shared
    got[0, 0] = 7  # the caller owns what it gets back


@pytest.mark.parametrize(
    "change",
    [
        lambda f, ids, g: (f.assign(geometry=f.geometry.translate(xoff=10.0)), ids, g),
        lambda f, ids, g: (f, ids[::-1].copy(), g),
        lambda f, ids, g: (f, ids, GridSpec(g.crs, g.transform, g.width + 1, g.height)),
        lambda f, ids, g: (f.iloc[:5], ids[:5], g),
    ],
    ids=["geometry moved a pixel", "ids", "grid", "a feature fewer"],
)
def test_any_change_of_the_burn_inputs_is_a_miss(tmp_path: Path, change: Change) -> None:
    store, frame, ids = RunStore(tmp_path), _parcels(), np.arange(6, dtype=np.int32)
    first = PlanCache(store)
    cached_burn(first, burn_features)(frame, ids, GRID)
    first.flush()
    counting, again = CountingBurn(), PlanCache(store)
    changed = change(frame, ids, GRID)
    got, _ = cached_burn(again, counting)(*changed)
    assert counting.calls == 1 and again.misses == 1
    np.testing.assert_array_equal(got, burn_features(*changed)[0])


def test_flush_removes_what_the_plan_no_longer_uses(tmp_path: Path) -> None:
    store, frame, ids = RunStore(tmp_path), _parcels(), np.arange(6, dtype=np.int32)
    old = PlanCache(store)
    cached_burn(old, burn_features)(frame, ids, GRID)
    old.flush()
    new = PlanCache(store)
    cached_burn(new, burn_features)(frame.iloc[:3], ids[:3], GRID)
    written = new.flush()
    assert store.list_names(FOLDER) == written  # the old burn is gone


def test_a_damaged_entry_is_a_miss_and_is_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, frame, ids = RunStore(tmp_path), _parcels(), np.arange(6, dtype=np.int32)
    first = PlanCache(store)
    expected, _ = cached_burn(first, burn_features)(frame, ids, GRID)
    (name,) = first.flush()
    whole = store.read_bytes(f"{FOLDER}/{name}")
    store.write_bytes(f"{FOLDER}/{name}", whole[: len(whole) // 2])  # a truncated file
    again = PlanCache(store)
    with caplog.at_level(logging.WARNING, logger="pipeline.run.plan_cache"):
        got, _ = cached_burn(again, burn_features)(frame, ids, GRID)
    assert "unreadable" in caplog.text and (again.hits, again.misses) == (0, 1)
    np.testing.assert_array_equal(got, expected)
    again.flush()
    assert store.read_bytes(f"{FOLDER}/{name}") == whole


def test_a_frame_keeps_its_types_and_what_goes_with_it(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    frame = pd.DataFrame(
        {
            "tile": ["33TVM", "33TWM", "33TVM"],
            "row": np.array([1, 2, 3], dtype=np.int32),
            "label": np.array([10, 20, 10], dtype=np.int64),
            "value": [0.5, np.nan, 2.0],
            "split": np.array(["train", "validation", ""], dtype=object),
        }
    )
    first = PlanCache(store)
    first.put_frame("pixels-x", frame, {"__frame__": {"row": "abc"}})
    first.flush()
    got, extra = PlanCache(store).frame("pixels-x")  # type: ignore[misc]
    pd.testing.assert_frame_equal(got, frame)
    assert extra == {"__frame__": {"row": "abc"}}


def test_the_code_digest_follows_the_source(tmp_path: Path) -> None:
    module = tmp_path / "sitsflow_probe_module.py"
    module.write_text("X = 1\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        before = code_digest(("sitsflow_probe_module",))
        module.write_text("X = 2\n")
        assert code_digest(("sitsflow_probe_module",)) != before
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("sitsflow_probe_module", None)


def test_a_resumed_plan_reads_the_burn_and_the_pixels_back(tmp_path: Path) -> None:
    manifest = load_manifest(demo_manifest(tmp_path))
    first = plan_run(resolve(manifest))
    assert first.cache is not None and first.cache.hits == 0 and first.cache.misses == 2
    assert not RunStore(manifest.spec.outputs.store).list_names(FOLDER)
    first.cache.flush()
    again = plan_run(resolve(manifest))
    assert again.cache is not None and (again.cache.hits, again.cache.misses) == (2, 0)
    pd.testing.assert_frame_equal(again.outputs("samples").pixels, first.outputs("samples").pixels)
    np.testing.assert_array_equal(again.reference.polygon_ids, first.reference.polygon_ids)
    assert again.digests == first.digests
    assert {stage: [u.digest for u in units] for stage, units in again.units.items()} == {
        stage: [u.digest for u in units] for stage, units in first.units.items()
    }


def _plan_and_keep(manifest: RunManifest) -> RunPlan:
    """Plan, then write the plan cache as a run does once it holds the lock."""
    plan = plan_run(resolve(manifest))
    assert plan.cache is not None
    plan.cache.flush()
    return plan


def test_a_changed_sampling_rule_draws_the_pixels_again(tmp_path: Path) -> None:
    manifest = load_manifest(demo_manifest(tmp_path))
    first = _plan_and_keep(manifest)
    spec = manifest.spec.model_copy(
        update={"sampling": manifest.spec.sampling.model_copy(update={"seed": 7})}
    )
    again = plan_run(resolve(manifest.model_copy(update={"spec": spec})))
    assert again.cache is not None and (again.cache.hits, again.cache.misses) == (1, 1)
    assert again.digests["samples"] != first.digests["samples"]
    assert again.digests["cube_store"] == first.digests["cube_store"]


def test_moving_one_parcel_burns_again(tmp_path: Path) -> None:
    manifest = load_manifest(demo_manifest(tmp_path))
    _plan_and_keep(manifest)
    reference = gpd.read_file(manifest.spec.reference.path)
    reference.loc[0, "geometry"] = translate(reference.geometry[0], xoff=10.0)
    moved = tmp_path / "moved.gpkg"
    reference.to_file(moved)
    spec = manifest.spec.model_copy(
        update={"reference": manifest.spec.reference.model_copy(update={"path": str(moved)})}
    )
    again = plan_run(resolve(manifest.model_copy(update={"spec": spec})))
    assert again.cache is not None and (again.cache.hits, again.cache.misses) == (0, 2)


def test_an_entry_that_cannot_be_kept_costs_nothing_but_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, frame, ids = RunStore(tmp_path), _parcels(), np.arange(6, dtype=np.int32)
    monkeypatch.setattr("pipeline.run.plan_cache._BLOSC_MAX", 100)  # a raster too big to pack
    cache = PlanCache(store)
    with caplog.at_level(logging.WARNING, logger="pipeline.run.plan_cache"):
        got, _ = cached_burn(cache, burn_features)(frame, ids, GRID)
    np.testing.assert_array_equal(got, burn_features(frame, ids, GRID)[0])
    assert "not kept" in caplog.text and cache.flush() == []


def test_a_failed_write_leaves_the_run_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, frame, ids = RunStore(tmp_path), _parcels(), np.arange(6, dtype=np.int32)
    cache = PlanCache(store)
    cached_burn(cache, burn_features)(frame, ids, GRID)

    def refuse(relative: str, data: bytes) -> None:
        raise PermissionError(f"read-only: {relative}")

    monkeypatch.setattr(store, "write_bytes", refuse)
    with caplog.at_level(logging.WARNING, logger="pipeline.run.plan_cache"):
        assert cache.flush() == []
    assert "not written" in caplog.text and not cache.pending


def test_a_resumed_plan_warns_as_the_first_did(tmp_path: Path) -> None:
    def greedy(spec: dict[str, Any]) -> None:
        spec["sampling"].update(strategy="per_class_count", count=10**6)  # above any class

    manifest = load_manifest(demo_manifest(tmp_path, greedy))
    with pytest.warns(SamplingWarning, match="fewer than count=1000000") as first_time:
        _plan_and_keep(manifest)
    with pytest.warns(SamplingWarning, match="fewer than count=1000000") as again_time:
        again = plan_run(resolve(manifest))
    assert again.cache is not None and again.cache.hits == 2
    said = [str(w.message) for w in first_time if w.category is SamplingWarning]
    assert [str(w.message) for w in again_time if w.category is SamplingWarning] == said


def test_a_strict_resume_still_fails_on_a_sampling_warning(tmp_path: Path) -> None:
    import warnings

    def greedy(spec: dict[str, Any]) -> None:
        spec["sampling"].update(strategy="per_class_count", count=10**6)

    manifest = load_manifest(demo_manifest(tmp_path, greedy))
    with pytest.warns(SamplingWarning):
        _plan_and_keep(manifest)
    with warnings.catch_warnings(), pytest.raises(SamplingWarning):
        warnings.simplefilter("error", SamplingWarning)
        plan_run(resolve(manifest))
