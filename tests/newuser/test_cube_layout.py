"""The build's own arrays (owned, chunk_done) live apart from the user's variables; stores
written before keep resuming."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.cube.store import (
    STATE_GROUP,
    create_cube_store,
    cube_template,
    finished_windows,
    mark_chunk_done,
    open_cube,
    state_template,
    write_region,
    write_template,
)
from pipeline.manifest import load_manifest, resolve
from pipeline.run.runner import plan_run
from tests.run.helpers import demo_manifest


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = plan_run(resolve(load_manifest(demo_manifest(tmp_path_factory.mktemp("p")))))
    return run.cube


def _write_window(path: str, plan) -> None:  # type: ignore[no-untyped-def]
    window = plan.windows[0]
    write_region(path, window, {"owned": np.ones((window.height, window.width), np.uint8)})
    mark_chunk_done(path, plan.chunk_size, window)


def test_the_users_dataset_holds_no_internal_arrays(plan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "cube.zarr")
    create_cube_store(plan, path)
    _write_window(path, plan)
    cube = xr.open_zarr(path)
    assert not {"owned", "chunk_done"} & set(cube.variables)
    assert finished_windows(path, plan.chunk_size, plan.windows) == {plan.windows[0]}
    state = xr.open_zarr(path, group=STATE_GROUP)
    assert int(state["owned"].sum()) == plan.windows[0].height * plan.windows[0].width
    assert open_cube(path)["s2_ndvi"].dtype == np.float32


def test_a_store_of_the_old_layout_still_resumes(plan, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "old.zarr")
    old = xr.merge([cube_template(plan), state_template(plan)])  # everything at the root
    write_template(old, path)
    _write_window(path, plan)
    assert "chunk_done" in zarr.open_group(path, mode="r")
    assert finished_windows(path, plan.chunk_size, plan.windows) == {plan.windows[0]}
