"""Sample extraction: straight from the COGs equals from the cube, locally and on a dask cluster."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, get_task_stream
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cube.build import CubeChunkTask, build_chunk
from pipeline.cube.plan import CubePlan
from pipeline.cube.read import RasterioReader
from pipeline.cube.store import create_cube_store
from pipeline.errors import InputDataError
from pipeline.manifest import resolve
from pipeline.model import GridSpec
from pipeline.run.runner import RunPlan, plan_run
from pipeline.samples.extract import (
    extract_features,
    extract_from_cogs,
    labelled_pixels,
    plan_cog_extraction,
    write_samples,
)
from pipeline.samples.select import SelectionRule, select_pixels
from pipeline.samples.split import TRAIN, VALIDATION, split_polygons
from pipeline.warnings import DataQualityWarning
from tests.conftest import demo_in
from tests.servers.dask_cluster import dask_cluster


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> RunPlan:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        return plan_run(resolve(demo_in(tmp_path_factory.mktemp("demo") / "store")))


@pytest.fixture(scope="module")
def demo_cube(demo: RunPlan, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo cube, built chunk by chunk in this process."""
    store = str(tmp_path_factory.mktemp("cube") / "cube.zarr")
    create_cube_store(demo.cube, store)
    for window in demo.cube.windows:
        build_chunk(CubeChunkTask(demo.cube, window, store))
    return store


@pytest.fixture(scope="module")
def samples(demo: RunPlan) -> pd.DataFrame:
    reference = demo.reference
    labels = reference.table.set_index("polygon_id")["label"]
    split = split_polygons({int(p): int(labels[p]) for p in reference.present_ids()}, 0.3, 0)
    pixels = labelled_pixels(reference, split)
    return select_pixels(pixels, SelectionRule(max_pixels_per_polygon=15), seed=0)


def test_labelled_pixels_columns(demo: RunPlan) -> None:
    reference = demo.reference
    ids = reference.present_ids()
    split = {int(p): (TRAIN if p % 2 else VALIDATION) for p in ids}
    pixels = labelled_pixels(reference, split, regions={int(p): int(p) % 3 for p in ids})
    columns = ["row", "col", "polygon_id", "label", "group", "split", "region"]
    assert list(pixels.columns) == columns
    assert len(pixels) == int((reference.polygon_ids >= 0).sum())
    row = pixels.iloc[100]
    assert reference.polygon_ids[row["row"], row["col"]] == row["polygon_id"]
    assert row["region"] == row["polygon_id"] % 3
    with pytest.raises(ValueError, match="have no side in the split"):
        labelled_pixels(reference, {})


def test_cogs_equal_cube(demo: RunPlan, demo_cube: str, samples: pd.DataFrame) -> None:
    names = demo.cube.feature_names
    from_cube = extract_features(samples, demo.cube, source="cube", store=demo_cube)
    assert len(from_cube) == len(samples)
    for cell in (8, 64):  # many small windows, then one per chunk
        done: list[int] = []

        def count(values: np.ndarray, sink: list[int] = done) -> None:
            sink.append(len(values))

        from_cogs = extract_features(samples, demo.cube, source="cogs", cell=cell, on_done=count)
        assert sum(done) == len(samples)
        assert from_cogs[names].notna().all().all()
        # Gap-filling is per pixel, so small windows give the cube's values exactly.
        np.testing.assert_array_equal(from_cogs[names].to_numpy(), from_cube[names].to_numpy())
        assert (from_cogs["label"] == from_cube["label"]).all()


class CountingReader:
    """The production reader, counting the pixels it is asked for."""

    def __init__(self) -> None:
        self.inner = RasterioReader()
        self.pixels = 0
        self.reads = 0

    def read(self, href: str, band_index: int, grid: GridSpec, **kwargs: object) -> np.ndarray:
        self.reads += 1
        self.pixels += grid.width * grid.height
        return self.inner.read(href, band_index, grid, **kwargs)  # type: ignore[arg-type]


def test_sparse_samples_read_small_windows(demo: RunPlan, samples: pd.DataFrame) -> None:
    sparse = samples.iloc[::40]
    tasks = plan_cog_extraction(sparse, demo.cube, cell=16)
    reader = CountingReader()
    values = [extract_from_cogs(task, reader) for task in tasks]
    assert sum(len(v) for v in values) == len(sparse)
    windows = [w for t in tasks for w in t.windows]
    per_file = sum(w.n_pixels for w in windows)
    assert per_file < 0.1 * demo.cube.grid.width * demo.cube.grid.height
    acquisitions = sum(len(s.acquisitions) for s in demo.cube.sensors)
    assert reader.pixels == 2 * acquisitions * per_file  # ndvi and cloud of every acquisition


grids = st.builds(
    lambda w, h: GridSpec("EPSG:32633", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), w, h),
    st.integers(1, 200),
    st.integers(1, 200),
)


@settings(max_examples=100, deadline=None)
@given(grid=grids, data=st.data(), cell=st.integers(1, 40), chunk=st.sampled_from([16, 32, 64]))
def test_cog_plan_covers_each_pixel_once(
    grid: GridSpec, data: st.DataObject, cell: int, chunk: int
) -> None:
    n = data.draw(st.integers(1, 80))
    rows = data.draw(st.lists(st.integers(0, grid.height - 1), min_size=n, max_size=n))
    cols = data.draw(st.lists(st.integers(0, grid.width - 1), min_size=n, max_size=n))
    pixels = pd.DataFrame({"row": rows, "col": cols})
    plan = CubePlan(grid=grid, sensors=(), chunk_size=chunk)
    tasks = plan_cog_extraction(pixels, plan, cell)
    wanted = set(zip(rows, cols, strict=True))
    got = [(r, c) for t in tasks for r, c in zip(t.rows, t.cols, strict=True)]
    assert sorted(got) == sorted(wanted)  # each distinct pixel once
    for task in tasks:
        chunk_ids = {(r // chunk, c // chunk) for r, c in zip(task.rows, task.cols, strict=True)}
        assert len(chunk_ids) == 1  # a task stays in its cube chunk
        for r, c in zip(task.rows, task.cols, strict=True):
            holders = [
                w
                for w in task.windows
                if w.row_off <= r < w.row_off + w.height and w.col_off <= c < w.col_off + w.width
            ]
            assert len(holders) == 1
        for w in task.windows:
            assert w.height <= cell and w.width <= cell
            assert w.row_off + w.height <= grid.height and w.col_off + w.width <= grid.width


def test_pixels_off_the_grid_are_refused(demo: RunPlan) -> None:
    pixels = pd.DataFrame({"row": [0, 500], "col": [0, 3]})
    with pytest.raises(InputDataError, match=r"1 sample pixel\(s\) lie outside the 100 x 101"):
        extract_features(pixels, demo.cube, source="cogs")
    with pytest.raises(InputDataError, match="no sample pixel"):
        extract_features(pixels.iloc[:0], demo.cube)


def test_samples_geoparquet_round_trip(
    demo: RunPlan, samples: pd.DataFrame, tmp_path: Path
) -> None:
    table = extract_features(samples.iloc[:50], demo.cube, source="cogs")
    path = tmp_path / "samples.parquet"
    write_samples(table, path)
    loaded = gpd.read_parquet(path)
    assert loaded.crs == table.crs
    grid = demo.cube.grid
    first = loaded.iloc[0]
    assert first.geometry.x == pytest.approx(grid.x_coords()[first["col"]])
    assert first.geometry.y == pytest.approx(grid.y_coords()[first["row"]])
    pd.testing.assert_frame_equal(
        pd.DataFrame(loaded.drop(columns="geometry")), pd.DataFrame(table.drop(columns="geometry"))
    )


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with dask_cluster(n_workers=2) as cluster, Client(cluster.address, timeout=30) as c:
        yield c


@pytest.mark.slow
def test_cogs_on_a_dask_cluster(demo: RunPlan, samples: pd.DataFrame, client: Client) -> None:
    names = demo.cube.feature_names
    here = extract_features(samples, demo.cube, source="cogs")
    with get_task_stream(client) as stream:
        remote = extract_features(samples, demo.cube, source="cogs", client=client)
    np.testing.assert_array_equal(remote[names].to_numpy(), here[names].to_numpy())
    ran_on = {record["worker"] for record in stream.data}
    assert len(stream.data) == len(plan_cog_extraction(samples, demo.cube))
    assert ran_on and ran_on <= set(client.scheduler_info()["workers"])


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    size=st.integers(4, 40),
    keep=st.integers(0, 2**31 - 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_plan_extraction_groups_pixels_by_chunk(
    height: int, width: int, size: int, keep: int, seed: int
) -> None:
    """The sorted grouping gives, for each chunk, exactly the pixels inside it, in table order
    (chunks missing from the list, e.g. not owned, and pixels off the grid are left out)."""
    from pipeline.model import Window
    from pipeline.samples.extract import plan_extraction

    rng = np.random.default_rng(seed)
    windows = GridSpec("EPSG:32633", (10.0, 0, 0, 0, -10.0, 0), width, height).chunks(size)
    windows = [w for i, w in enumerate(windows) if (keep >> (i % 31)) & 1]
    pixels = pd.DataFrame(
        {"row": rng.integers(-3, height + 3, 400), "col": rng.integers(-3, width + 3, 400)}
    )
    tasks = plan_extraction(pixels, windows, "cube.zarr", [("s2_ndvi", "s2_time")])
    expected = []
    for w in windows:
        rows, cols = w.slices
        inside = pixels[
            pixels["row"].between(rows.start, rows.stop - 1)
            & pixels["col"].between(cols.start, cols.stop - 1)
        ]
        if len(inside):
            expected.append((w, tuple(inside["row"]), tuple(inside["col"])))
    assert [(t.window, t.rows, t.cols) for t in tasks] == expected
    # A layout that is not a grid (a window starting inside another's rows) takes the slow path.
    odd = [Window(0, 0, 10, 10), Window(5, 10, 10, 10), Window(10, 0, 10, 10)]
    tasks = plan_extraction(pixels, odd, "cube.zarr", [("s2_ndvi", "s2_time")])
    for task in tasks:
        rows, cols = task.window.slices
        assert all(rows.start <= r < rows.stop for r in task.rows)
        assert all(cols.start <= c < cols.stop for c in task.cols)
    assert sum(len(t.rows) for t in tasks) == sum(
        int(((pixels["row"] >= w.row_off) & (pixels["row"] < w.row_off + w.height)
             & (pixels["col"] >= w.col_off) & (pixels["col"] < w.col_off + w.width)).sum())
        for w in odd
    )  # fmt: skip
