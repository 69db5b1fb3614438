"""Building cubes: values, multi-sensor names, user features, ownership, idempotent region
writes, the streamed path, and the same cube on local disk and on S3 (moto) built by a
multi-process dask cluster."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.cube.build import (
    CubeChunkTask,
    build_chunk,
    check_user_features,
    compute_pixels,
    compute_window,
    feature_stack,
    stream_features,
)
from pipeline.cube.encoding import VariableEncoding, decode, encode
from pipeline.cube.plan import CubePlan, plan_cube
from pipeline.cube.store import create_cube_store, finished_windows, read_features
from pipeline.errors import ManifestError
from pipeline.grid import Tile
from pipeline.model import GridSpec, Window, day_number
from tests.cube.synthetic import Series, expected_valid, make_series
from tests.servers.s3 import S3Server, s3_bucket_in_environment

REPO = Path(__file__).resolve().parents[2]
START, END = date(2021, 1, 1), date(2021, 4, 30)
UF = "tests.cube.user_functions"


@pytest.fixture(scope="module")
def two_sensors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Series, Series]:
    root = tmp_path_factory.mktemp("series")
    s2 = make_series(root, size=96, n_dates=6, name="s2", seed=1)
    # A coarser sensor (20 m bands, 40 m mask) with other dates and another date grid step.
    l8 = make_series(
        root, size=96, n_dates=5, name="l8", first_day=8, step=23, seed=2, date_step_days=16,
        resolution=20.0,
    )  # fmt: skip
    return s2, l8


def _plan(series: tuple[Series, ...], **kwargs: object) -> CubePlan:
    return plan_cube(
        series[0].grid,
        [(s.profile, s.acquisitions) for s in series],
        START,
        END,
        kwargs.pop("indices", None),  # type: ignore[arg-type]
        kwargs.pop("chunk_size", 32),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def _build_local(plan: CubePlan, store: Path) -> None:
    create_cube_store(plan, str(store))
    for window in plan.windows:
        build_chunk(CubeChunkTask(plan, window, str(store)))


def test_gap_filled_values_equal_np_interp_on_the_valid_dates(
    two_sensors: tuple[Series, Series],
) -> None:
    """Each pixel's series is np.interp over its clear dates (SCL at 20 m, nearest), ends held
    (the float32 cube: the arithmetic itself; the int16 cube is that cube quantized, below)."""
    s2 = two_sensors[0]
    plan = _plan((s2,), indices=["ndvi"], encoding="float32")
    arrays = compute_window(plan, Window(0, 0, 96, 96)).arrays
    valid = expected_valid(s2)
    days = np.array([day_number(a.datetime) for a in s2.acquisitions])
    targets = np.array([day_number(d) for d in plan.sensors[0].dates])
    rng = np.random.default_rng(0)
    for r, c in rng.integers(0, 96, size=(40, 2)):
        ok = valid[:, r, c]
        for band in ("red", "nir"):
            raw = s2.raw[band][:, r, c].astype(np.float64) * 1e-4
            expected = np.interp(targets, days[ok], raw[ok]) if ok.any() else np.nan
            np.testing.assert_allclose(arrays[f"s2_{band}"][:, r, c], expected, rtol=1e-5)
        assert arrays["s2_valid_count"][r, c] == ok.sum()
        red, nir = arrays["s2_red"][:, r, c], arrays["s2_nir"][:, r, c]
        np.testing.assert_allclose(arrays["s2_ndvi"][:, r, c], (nir - red) / (nir + red), 1e-5)


def test_the_int16_cube_is_the_float32_cube_quantized(two_sensors: tuple[Series, Series]) -> None:
    """Every encoded series is the float32 one rounded to its step (codes and decoded values),
    within half a step of it; float32 series, counts and ``owned`` are unchanged."""
    functions = [f"{UF}:red_edge_like"]
    exact = _plan(two_sensors, user_functions=functions, encoding="float32")
    coded = _plan(two_sensors, user_functions=functions)
    window = Window(0, 0, 96, 96)
    reference = compute_window(exact, window).arrays
    result = compute_window(coded, window)
    encodings = coded.variable_encodings
    assert encodings["s2_red"] == VariableEncoding(1e-4)
    assert encodings["l8_ndvi"] == VariableEncoding(1e-4)
    assert encodings["s2_nir_minus_red"] is None  # a user feature
    assert set(result.codes) == {v for v, e in encodings.items() if e is not None}
    for name, expected in reference.items():
        got = result.arrays[name]
        encoding = encodings.get(name)
        if encoding is None:
            np.testing.assert_array_equal(got, expected, err_msg=name)
            continue
        np.testing.assert_array_equal(result.codes[name], encode(expected, encoding), name)
        np.testing.assert_array_equal(got, decode(result.codes[name], encoding), name)
        assert result.stored[name] is result.codes[name]
        # Half a step, and the float32 rounding of the decoded value.
        np.testing.assert_allclose(got, expected, rtol=2**-22, atol=5e-5, err_msg=name)


def test_multi_sensor_cube_names_and_date_grids(
    two_sensors: tuple[Series, Series], tmp_path: Path
) -> None:
    plan = _plan(two_sensors)
    s2, l8 = plan.sensors
    # Default indices: those the bands allow (ndvi, ndwi, brightness).
    assert s2.indices == l8.indices == ("ndvi", "ndwi", "brightness")
    assert len(s2.dates) == 12 and len(l8.dates) == 8  # 10- and 16-day grids over the period
    names = plan.feature_names
    assert names[0] == "s2_blue_20210101" and names[-1] == "l8_brightness_20210423"
    assert len(names) == 7 * 12 + 7 * 8
    store = tmp_path / "cube.zarr"
    _build_local(plan, store)
    cube = xr.open_zarr(store)
    assert cube["l8_red"].dims == ("l8_time", "y", "x")
    assert cube.sizes["s2_time"] == 12 and cube.sizes["l8_time"] == 8
    # The 20 m sensor is resampled onto the 10 m grid: every pixel has a value.
    assert np.isfinite(cube["l8_red"].values).all()
    assert cube.attrs["feature_names"] == names


def test_user_functions_add_named_features(two_sensors: tuple[Series, Series]) -> None:
    plan = _plan(
        two_sensors[:1], indices=[], user_functions=[f"{UF}:red_edge_like"], encoding="float32"
    )
    assert plan.sensors[0].variables[-2:] == ("s2_nir_minus_red", "s2_green_share")
    check_user_features(plan)
    arrays = compute_window(plan, Window(0, 0, 16, 16)).arrays
    np.testing.assert_allclose(arrays["s2_nir_minus_red"], arrays["s2_nir"] - arrays["s2_red"])


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("wrong_shape", r"wrong_shape.*shape \(4, 4\).*the bands have shape \(3, 4, 4\)"),
        ("bad_name", r"bad_name.*'NDRE-1'.*lowercase"),
        ("raises", r"raises.*raised ZeroDivisionError: the user's bug"),
        ("needs_swir", r"needs_swir.*band 'swir'.*blue, green, red, nir"),
        ("clashes", r"clashes.*'ndvi'.*already"),
        ("not_a_dict", r"not_a_dict.*returned ndarray"),
        ("does_not_exist", r"has no callable 'does_not_exist'"),
    ],
)
def test_broken_user_functions_fail_the_plan_naming_the_function(
    two_sensors: tuple[Series, Series], function: str, message: str
) -> None:
    with pytest.raises(ManifestError, match=message) as caught:
        _plan(two_sensors[:1], indices=["ndvi"], user_functions=[f"{UF}:{function}"])
    assert caught.value.field == "features.user_functions"  # a domain key (run prints spec.)
    assert "Fix:" in str(caught.value)


def test_unimportable_user_module_is_a_clear_error(two_sensors: tuple[Series, Series]) -> None:
    with pytest.raises(ManifestError, match=r"module 'no_such_module' cannot be imported"):
        _plan(two_sensors[:1], user_functions=["no_such_module:f"])


def test_region_writes_are_idempotent_and_finished_chunks_are_listed(
    two_sensors: tuple[Series, Series], tmp_path: Path
) -> None:
    plan = _plan(two_sensors[:1], indices=["ndvi"])
    store = tmp_path / "cube.zarr"
    create_cube_store(plan, str(store))
    first, *rest = plan.windows
    assert finished_windows(str(store), plan.chunk_size, plan.windows) == set()
    build_chunk(CubeChunkTask(plan, first, str(store)))
    assert finished_windows(str(store), plan.chunk_size, plan.windows) == {first}
    variables = plan.time_series_variables
    before = read_features(str(store), variables, first)
    chunk_files = sorted((store / "s2_red" / "c").rglob("*"))
    blobs = {p: p.read_bytes() for p in chunk_files if p.is_file()}
    build_chunk(CubeChunkTask(plan, first, str(store)))  # a retried task
    assert {p: p.read_bytes() for p in blobs} == blobs  # the same bytes
    np.testing.assert_array_equal(read_features(str(store), variables, first), before)
    # Other windows are untouched (still the fill value) until built.
    assert np.isnan(read_features(str(store), variables, rest[0])).all()


@pytest.mark.parametrize("encoding", ["int16", "float32"])
def test_streamed_path_equals_the_stored_path(
    two_sensors: tuple[Series, Series], tmp_path: Path, encoding: str
) -> None:
    plan = _plan(two_sensors, user_functions=[f"{UF}:red_edge_like"], encoding=encoding)
    store = tmp_path / "cube.zarr"
    _build_local(plan, store)
    variables = plan.time_series_variables
    for window in plan.windows:
        stored = read_features(str(store), variables, window)
        np.testing.assert_array_equal(stream_features(plan, window), stored)
    # Any window, not only chunks: a sample's neighbourhood streamed for extraction.
    odd = Window(13, 27, 21, 9)
    stored = read_features(str(store), variables, Window(0, 0, 96, 96))
    np.testing.assert_array_equal(stream_features(plan, odd), stored[:, 13:34, 27:36])


def test_pixels_owned_by_another_tile_are_left_out(
    two_sensors: tuple[Series, Series], tmp_path: Path
) -> None:
    """Two tiles overlap by 32 columns; the west tile's core ends 16 columns into the overlap."""
    s2 = two_sensors[0]
    grid = s2.grid
    left, top = grid.transform[2], grid.transform[5]
    west = Tile("a", grid, (left, top - 960, left + 800, top))
    east_grid = GridSpec(grid.crs, (10.0, 0.0, left + 640, 0.0, -10.0, top), 96, 96)
    east = Tile("b", east_grid, (left + 800, top - 960, left + 1600, top))
    plan = plan_cube(
        grid, [(s2.profile, s2.acquisitions)], START, END, ["ndvi"], 32, tile=west,
        tiles=(west, east),
    )  # fmt: skip
    store = tmp_path / "west.zarr"
    _build_local(plan, store)
    cube = xr.open_zarr(store)
    assert "owned" not in cube and "chunk_done" not in cube  # the build's state, apart
    owned = xr.open_zarr(store, group="sitsflow")["owned"].values
    assert (owned[:, :80] == 1).all() and (owned[:, 80:] == 0).all()
    assert np.isnan(cube["s2_red"].values[:, :, 80:]).all()
    assert (cube["s2_valid_count"].values[:, 80:] == 0).all()
    assert np.isfinite(cube["s2_red"].values[:, :, :80]).all()


@pytest.mark.parametrize("encoding", ["int16", "float32"])
@pytest.mark.parametrize("masking", ["date", "band"])
def test_a_few_pixels_computed_alone_equal_the_whole_window(
    two_sensors: tuple[Series, Series], encoding: str, masking: str
) -> None:
    """``compute_pixels`` runs the steps after the read on the chosen pixels only: the same
    bits as the whole window's computation, with a coarser sensor resampled, another tile
    owning part of the window, and either masking rule."""
    s2, l8 = (
        dataclasses.replace(s, profile=dataclasses.replace(s.profile, masking=masking))
        for s in two_sensors
    )
    grid = s2.grid
    left, top = grid.transform[2], grid.transform[5]
    west = Tile("a", grid, (left, top - 960, left + 800, top))
    east_grid = GridSpec(grid.crs, (10.0, 0.0, left + 640, 0.0, -10.0, top), 96, 96)
    east = Tile("b", east_grid, (left + 800, top - 960, left + 1600, top))
    plan = _plan((s2, l8), indices=["ndvi"], encoding=encoding, tile=west, tiles=(west, east))
    assert plan.pixelwise
    rng = np.random.default_rng(3)
    for window in (Window(0, 64, 32, 32), Window(13, 27, 21, 60)):
        whole = feature_stack(plan, compute_window(plan, window).arrays)
        for n in (1, 7, window.height * window.width // 3):
            flat = rng.choice(window.height * window.width, size=n, replace=False)
            rows, cols = np.unravel_index(flat, (window.height, window.width))
            got = compute_pixels(plan, [(window, rows, cols)])
            assert got.shape == (n, len(plan.feature_names)) and got.flags.c_contiguous
            np.testing.assert_array_equal(got, whole[:, rows, cols].T)
    # Several windows at once: their pixels one window after the other.
    a, b = Window(0, 0, 40, 40), Window(40, 50, 30, 46)
    both = compute_pixels(plan, [(a, [0, 39, 7], [0, 39, 22]), (b, [29, 3], [45, 0])])
    np.testing.assert_array_equal(
        both,
        np.concatenate(
            [
                feature_stack(plan, compute_window(plan, a).arrays)[:, [0, 39, 7], [0, 39, 22]].T,
                feature_stack(plan, compute_window(plan, b).arrays)[:, [29, 3], [45, 0]].T,
            ]
        ),
    )
    assert compute_pixels(plan, []).shape == (0, len(plan.feature_names))
    # User functions may look at neighbours: such a plan computes the whole window.
    with_user = _plan((s2,), user_functions=[f"{UF}:red_edge_like"])
    assert not with_user.pixelwise
    window = Window(8, 8, 16, 16)
    whole = feature_stack(with_user, compute_window(with_user, window).arrays)
    np.testing.assert_array_equal(
        compute_pixels(with_user, [(window, [0, 5], [3, 15])]), whole[:, [0, 5], [3, 15]].T
    )


# --- local disk and S3, built by a multi-process dask cluster ----------------------------------


CUBE_BUCKET = "sitsflow-cube-test"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[S3Server]:
    """A moto S3 server with the test bucket, its settings in the environment (what worker
    processes get from theirs)."""
    with s3_bucket_in_environment(CUBE_BUCKET) as server:
        yield server


def _upload(series: Series, server: S3Server, bucket: str) -> Series:
    """The same COGs in a bucket; acquisitions point to s3:// (read through GDAL's /vsis3/)."""
    from dataclasses import replace

    import boto3

    from pipeline.model import AssetRef

    client = boto3.client("s3", endpoint_url=server.endpoint_url)
    acquisitions = []
    for acquisition in series.acquisitions:
        assets = {}
        for key, ref in acquisition.assets.items():
            path = Path(ref.href)
            object_key = f"{path.parent.name}/{path.name}"
            client.put_object(Bucket=bucket, Key=object_key, Body=path.read_bytes())
            assets[key] = AssetRef(f"s3://{bucket}/{object_key}")
        acquisitions.append(replace(acquisition, assets=assets))
    return replace(series, acquisitions=acquisitions)


@pytest.mark.slow
def test_same_cube_on_local_disk_and_on_s3_built_by_a_dask_cluster(
    two_sensors: tuple[Series, Series],
    s3_env: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distributed import Client

    from tests.servers.dask_cluster import dask_cluster
    from tests.servers.s3 import SECRET_KEY

    bucket = CUBE_BUCKET
    # One sensor (the multi-sensor cube is tested locally), chunks of 48 px: 4 windows, each
    # read from S3 by the worker that builds it.
    local_plan = _plan(two_sensors[:1], user_functions=[f"{UF}:red_edge_like"], chunk_size=48)
    remote_series = (_upload(two_sensors[0], s3_env, bucket),)
    remote_plan = _plan(remote_series, user_functions=[f"{UF}:red_edge_like"], chunk_size=48)
    local = tmp_path / "cube.zarr"
    _build_local(local_plan, local)

    remote = f"s3://{bucket}/cubes/tile.zarr"
    options = {"client_kwargs": {"endpoint_url": s3_env.endpoint_url}}
    create_cube_store(remote_plan, remote, options)
    tasks = [CubeChunkTask(remote_plan, w, remote, options) for w in remote_plan.windows]
    assert SECRET_KEY.encode() not in pickle.dumps(tasks)  # credentials stay in the environment
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # workers import tests.cube.user_functions
    with dask_cluster(n_workers=2) as cluster, Client(cluster.address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        reports = client.gather(client.map(build_chunk, tasks, pure=False))
        # A retried task (same window again) changes nothing.
        client.gather(client.submit(build_chunk, tasks[0], pure=False))
        workers = {r.window for r in reports}
    assert workers == set(remote_plan.windows)
    assert finished_windows(remote, 48, remote_plan.windows, options) == set(remote_plan.windows)

    local_group = zarr.open_group(str(local), mode="r")
    remote_group = zarr.open_group(remote, mode="r", storage_options=options)
    names = sorted(k for k in local_group.array_keys())
    assert names == sorted(remote_group.array_keys())
    for name in names:
        here, there = local_group[name], remote_group[name]
        assert isinstance(here, zarr.Array) and isinstance(there, zarr.Array)
        np.testing.assert_array_equal(here[...], there[...], err_msg=name)
    opened = xr.open_zarr(remote, storage_options=options)
    assert opened.rio.crs.to_string() == "EPSG:32631"
    assert tuple(opened.rio.transform())[:6] == local_plan.grid.transform


def test_each_tile_gets_the_acquisitions_that_meet_it(two_sensors: tuple[Series, Series]) -> None:
    """Tiles of a run may have different acquisitions (a different number of dates)."""
    from pipeline.cube.plan import plan_tile_cubes
    from pipeline.grid import user_tile

    s2 = two_sensors[0]
    left, top = s2.grid.transform[2], s2.grid.transform[5]
    # Tile x0y0 holds the series; tile x5y0 lies 4.8 km east of it, where no image is.
    tiles = [user_tile("EPSG:32631", 10.0, 96, (left, top), c, 0) for c in (0, 5)]
    plans = plan_tile_cubes(tiles, [(s2.profile, s2.acquisitions)], START, END, None, 32)
    assert [p.tile.id for p in plans if p.tile] == ["x0y0", "x5y0"]
    assert len(plans[0].sensors[0].acquisitions) == 6
    assert plans[1].sensors[0].acquisitions == ()
    assert plans[0].feature_names == plans[1].feature_names  # the same features everywhere
    assert plans[0].windows == plans[0].all_windows  # tiles that do not overlap own everything
