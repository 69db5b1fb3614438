"""The int16 storage encoding of the cube: the codes, the planning rule per variable, and the
stored cube as xarray, rioxarray and ``read_features`` see it (docs/cube.md, Storage)."""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.catalog.profiles import SENTINEL1, SENTINEL2_L2A_SEN2COR
from pipeline.cube.build import CubeChunkTask, build_chunk, compute_window, stream_features
from pipeline.cube.encoding import (
    FILL_CODE,
    VariableEncoding,
    decode,
    encode,
    quantize,
    series_encodings,
)
from pipeline.cube.plan import CubePlan, SensorCube, plan_cube
from pipeline.cube.store import create_cube_store, read_features, write_region
from pipeline.model import Window
from tests.cube.synthetic import EPSG, Series, make_series

START, END = date(2021, 1, 1), date(2021, 4, 30)
REFLECTANCE = VariableEncoding(1e-4)
DB = VariableEncoding(0.01)


# --- codes ---------------------------------------------------------------------------------------


def test_nan_is_the_fill_code_and_values_beyond_the_range_are_clipped() -> None:
    values = np.array([np.nan, 0.0, 1e-4, -1e-4, 3.2767, 3.3, 1e9, -1e9, np.inf], np.float32)
    codes = encode(values, REFLECTANCE)
    assert codes.dtype == np.int16
    np.testing.assert_array_equal(codes, [FILL_CODE, 0, 1, -1, 32767, 32767, 32767, -32767, 32767])
    decoded = decode(codes, REFLECTANCE)
    assert decoded.dtype == np.float32
    assert np.isnan(decoded[0]) and not np.isnan(decoded[1:]).any()
    assert decoded[4] == decoded[5] == np.float32(32767) * np.float32(1e-4)
    assert decoded[7] == -decoded[6]  # -32767: the range is symmetric, -32768 is NaN only


def test_codes_round_half_to_even() -> None:
    step = VariableEncoding(0.5)  # exact ties in binary
    values = np.array([0.25, 0.75, 1.25, -0.25, -0.75, 0.2, 0.3], np.float32)
    np.testing.assert_array_equal(encode(values, step), [0, 2, 2, 0, -2, 0, 1])


@pytest.mark.parametrize("encoding", [REFLECTANCE, DB], ids=["1e-4", "0.01"])
def test_every_code_decodes_and_encodes_back_to_itself(encoding: VariableEncoding) -> None:
    codes = np.arange(-32768, 32768, dtype=np.int16)
    decoded = decode(codes, encoding)
    np.testing.assert_array_equal(decoded[1:], codes[1:].astype(np.float32) * encoding.step)
    np.testing.assert_array_equal(encode(decoded, encoding), codes)
    # Quantizing what is already quantized changes nothing (a stored cube read and re-encoded).
    again = decoded.copy()
    np.testing.assert_array_equal(quantize(again, encoding), codes)
    np.testing.assert_array_equal(again, decoded)


def test_round_trip_is_within_half_a_step_and_quantize_is_encode_then_decode() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(-3.2, 3.2, size=(7, 33, 17)).astype(np.float32)
    values[0, :4, :4] = np.nan
    codes = encode(values, REFLECTANCE)
    decoded = decode(codes, REFLECTANCE)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(values))
    error = np.abs(decoded.astype(np.float64) - values.astype(np.float64))
    # Half a step, and the float32 rounding of the decoded value (half a unit in its last place).
    bound = 5e-5 + np.spacing(np.abs(values)).astype(np.float64)
    assert (error[~np.isnan(values)] <= bound[~np.isnan(values)]).all()
    quantized = values.copy()
    out = np.empty(values.shape, dtype=np.int16)
    assert quantize(quantized, REFLECTANCE, out=out) is out
    np.testing.assert_array_equal(out, codes)
    np.testing.assert_array_equal(quantized, decoded)


def test_bad_arrays_and_encodings_are_refused() -> None:
    with pytest.raises(ValueError, match="C-contiguous float32"):
        quantize(np.zeros((4, 4), np.float64), REFLECTANCE)
    with pytest.raises(ValueError, match="shape"):
        encode(np.zeros(4, np.float32), REFLECTANCE, out=np.empty(5, np.int16))
    with pytest.raises(ValueError, match="_FillValue must be -32768"):
        VariableEncoding.from_attributes({"scale_factor": 1e-4, "_FillValue": 0})
    with pytest.raises(ValueError, match="positive"):
        VariableEncoding(0.0)


# --- the planning rule ---------------------------------------------------------------------------


def _sensor(profile: object, indices: tuple[str, ...], user: tuple[str, ...] = ()) -> SensorCube:
    return SensorCube(profile, (), (), indices, (), user)  # type: ignore[arg-type]


def test_each_kind_of_variable_gets_its_step() -> None:
    (s2,) = SENTINEL2_L2A_SEN2COR.configure("s2", bands=["red", "nir", "green"])
    indices = ("ndvi", "ndwi", "brightness")
    sensor = _sensor(s2, indices, ("my_feature",))
    assert sensor.encodings("int16") == {
        "s2_red": REFLECTANCE,
        "s2_nir": REFLECTANCE,
        "s2_green": REFLECTANCE,
        "s2_ndvi": REFLECTANCE,
        "s2_ndwi": REFLECTANCE,
        "s2_brightness": REFLECTANCE,
        "s2_my_feature": None,  # user features stay float32
    }
    assert set(sensor.encodings("float32").values()) == {None}

    (linear,) = SENTINEL1.configure("s1", options={"orbits": "together"})
    (db,) = SENTINEL1.configure("s1", options={"orbits": "together", "units": "db"})
    # Linear backscatter is not a reflectance: float32, and so is its brightness.
    assert set(_sensor(linear, ("brightness",)).encodings("int16").values()) == {None}
    assert _sensor(db, ("brightness",)).encodings("int16") == {
        "s1_vv": DB,
        "s1_vh": DB,
        "s1_brightness": DB,
    }
    # A brightness of bands with different steps has none: float32.
    mixed = series_encodings((*s2.bands, *db.bands), ("brightness",), (), "int16")
    assert mixed[-1] is None


def test_an_unknown_encoding_is_refused(tmp_path: Path) -> None:
    series = make_series(tmp_path, size=32, n_dates=2)
    with pytest.raises(ValueError, match=r"one of \['int16', 'float32'\], got 'float16'"):
        plan_cube(series.grid, [(series.profile, series.acquisitions)], START, END, [], 32,
                  encoding="float16")  # fmt: skip


# --- the stored cube ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    return make_series(tmp_path_factory.mktemp("series"), size=64, n_dates=5, seed=7)


def _build(series: Series, store: Path, encoding: str) -> CubePlan:
    plan = plan_cube(
        series.grid, [(series.profile, series.acquisitions)], START, END, None, 32,
        encoding=encoding,
    )  # fmt: skip
    create_cube_store(plan, str(store))
    for window in plan.windows:
        build_chunk(CubeChunkTask(plan, window, str(store)))
    return plan


def test_xarray_decodes_the_int16_cube_to_our_values_and_knows_the_crs(
    series: Series, tmp_path: Path
) -> None:
    store = tmp_path / "cube.zarr"
    plan = _build(series, store, "int16")
    group = zarr.open_group(str(store), mode="r")
    red = group["s2_red"]
    assert isinstance(red, zarr.Array)
    assert red.dtype == np.int16 and red.fill_value == FILL_CODE
    assert red.attrs["scale_factor"] == float(np.float32(1e-4))
    assert red.attrs["_FillValue"] == FILL_CODE
    assert group["s2_valid_count"].dtype == np.uint16  # type: ignore[union-attr]

    full = Window(0, 0, 64, 64)
    ours = read_features(str(store), plan.time_series_variables, full)
    np.testing.assert_array_equal(ours, stream_features(plan, full))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about the encoding either
        cube = xr.open_zarr(store)
    assert cube.attrs["cube_encoding"] == "int16"
    assert cube.rio.crs.to_string() == EPSG
    assert tuple(cube.rio.transform())[:6] == series.grid.transform
    start = 0
    for name, _ in plan.time_series_variables:
        values = cube[name].values  # float64: xarray multiplies in the scale_factor's type
        assert np.issubdtype(values.dtype, np.floating)
        n = values.shape[0]
        # float64 holds code x float32 step exactly, so its float32 rounding is ours, bit for bit.
        np.testing.assert_array_equal(values.astype(np.float32), ours[start : start + n], name)
        start += n
    assert np.isnan(cube["s2_red"].values).any()  # clouds everywhere on a date: no value


def test_a_float32_cube_keeps_the_float_values(series: Series, tmp_path: Path) -> None:
    store = tmp_path / "cube.zarr"
    plan = _build(series, store, "float32")
    assert set(plan.variable_encodings.values()) == {None}
    full = Window(0, 0, 64, 64)
    result = compute_window(plan, full)
    assert result.codes == {}
    cube = xr.open_zarr(store)
    assert cube.attrs["cube_encoding"] == "float32"
    for name, _ in plan.time_series_variables:
        assert cube[name].dtype == np.float32
        assert zarr.open_group(str(store), mode="r")[name].dtype == np.float32  # type: ignore[union-attr]
        np.testing.assert_array_equal(cube[name].values, result.arrays[name], name)


def test_unwritten_chunks_read_as_nan_and_float_values_are_refused(
    series: Series, tmp_path: Path
) -> None:
    plan = plan_cube(series.grid, [(series.profile, series.acquisitions)], START, END, None, 32)
    store = str(tmp_path / "cube.zarr")
    create_cube_store(plan, store)
    assert np.isnan(read_features(store, plan.time_series_variables, Window(0, 0, 32, 32))).all()
    result = compute_window(plan, plan.windows[0])
    with pytest.raises(ValueError, match="s2_blue is stored as int16 codes but got float32"):
        write_region(store, plan.windows[0], result.arrays)


@pytest.mark.parametrize("encoding", ["int16", "float32"])
def test_the_manifest_chooses_the_encoding_of_the_run(encoding: str, tmp_path: Path) -> None:
    from pipeline.manifest import resolve
    from pipeline.run.runner import plan_run
    from pipeline.warnings import DataQualityWarning
    from tests.conftest import demo_in

    manifest = demo_in(tmp_path / "store")
    assert manifest.spec.outputs.cube_encoding == "int16"  # the default
    outputs = manifest.spec.outputs.model_copy(update={"cube_encoding": encoding})
    spec = manifest.spec.model_copy(update={"outputs": outputs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        run = plan_run(resolve(manifest.model_copy(update={"spec": spec})))
    assert run.cube.encoding == encoding
    expected = REFLECTANCE if encoding == "int16" else None
    assert run.cube.variable_encodings == {"s2_ndvi": expected}
