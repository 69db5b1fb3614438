"""Sample tables in the sits long format and in the wide form: the real files, values traced back
to their rows and cells, round trips between the forms, malformed tables refused with a fix, and
tables checked against the features a model needs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputDataError
from pipeline.learn.contract import ModelContract, check_features
from pipeline.samples.tables import (
    SampleTable,
    conform_to_contract,
    read_sample_table,
    sample_table_from_frame,
)
from tests.learn.data import CERRADO, MODIS_NDVI, RONDONIA


def test_cerrado_pivots_to_one_row_per_sample_bands_then_dates() -> None:
    table = read_sample_table(CERRADO)
    assert table.features.shape == (746, 46)
    assert table.features.dtype == np.float32
    # Samples span 15 years: features are named by position in the series.
    assert table.feature_names[:2] == ("ndvi_t00", "ndvi_t01")
    assert table.feature_names[23] == "evi_t00"
    assert table.feature_names[-1] == "evi_t22"
    assert [c.name for c in table.legend] == ["Cerrado", "Pasture"]
    assert [c.code for c in table.legend] == [1, 2]
    assert int((table.labels == "Cerrado").sum()) == 9200 // 23


def test_values_come_from_the_right_rows() -> None:
    long = pd.read_csv(CERRADO)
    table = read_sample_table(CERRADO)
    for i in (0, 137, 745):
        sample = long[long["sample_id"] == table.sample_ids[i]].sort_values("date")
        np.testing.assert_array_equal(
            table.features[i, :23], sample["NDVI"].to_numpy(dtype=np.float32)
        )
        np.testing.assert_array_equal(
            table.features[i, 23:], sample["EVI"].to_numpy(dtype=np.float32)
        )
        assert table.labels[i] == sample["label"].iloc[0]


def test_one_date_set_gives_dated_feature_names() -> None:
    table = read_sample_table(RONDONIA)
    assert table.feature_names[0] == "evi_20180712"
    assert table.feature_names[25] == "ndvi_20180712"
    assert len(np.unique(table.location_ids)) == 160


def test_samples_at_one_place_share_a_location_id() -> None:
    table = read_sample_table(MODIS_NDVI)
    same = (table.longitude[:, None] == table.longitude[None, :]) & (
        table.latitude[:, None] == table.latitude[None, :]
    )
    np.testing.assert_array_equal(same, table.location_ids[:, None] == table.location_ids[None, :])
    assert len(np.unique(table.location_ids)) < len(table)  # revisited places exist


def test_choosing_bands() -> None:
    table = read_sample_table(CERRADO, bands=["EVI"])
    assert table.feature_names[0] == "evi_t00" and table.features.shape == (746, 23)


def _long_table(values: np.ndarray, same_dates: bool) -> pd.DataFrame:
    n_samples, n_dates, _ = values.shape
    rows = []
    for s in range(n_samples):
        start = pd.Timestamp("2020-01-01") + pd.Timedelta(days=0 if same_dates else 365 * s)
        for t in range(n_dates):
            rows.append(
                {
                    "sample_id": s,
                    "longitude": float(s % 3),
                    "latitude": 1.0,
                    "label": f"class{s % 2}",
                    "date": (start + pd.Timedelta(days=16 * t)).date().isoformat(),
                    "B1": values[s, t, 0],
                    "B2": values[s, t, 1],
                }
            )
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=0)  # row order must not matter


@settings(max_examples=40)  # each example writes and reads a CSV file
@given(
    values=st.integers(1, 6).flatmap(
        lambda n: st.integers(1, 5).flatmap(
            lambda t: st.lists(
                st.floats(-1e3, 1e3, width=32), min_size=n * t * 2, max_size=n * t * 2
            ).map(lambda v: np.array(v, dtype=np.float32).reshape(n, t, 2))
        )
    ),
    same_dates=st.booleans(),
)
def test_pivot_round_trips(tmp_path_factory: pytest.TempPathFactory, values: np.ndarray,
                           same_dates: bool) -> None:  # fmt: skip
    path = tmp_path_factory.mktemp("tables") / "t.csv"
    _long_table(values, same_dates).to_csv(path, index=False)
    table = read_sample_table(path)
    n, t, _ = values.shape
    assert table.features.shape == (n, 2 * t)
    np.testing.assert_array_equal(table.features[:, :t], values[:, :, 0])
    np.testing.assert_array_equal(table.features[:, t:], values[:, :, 1])
    dated = same_dates or n == 1
    assert table.feature_names[0] == ("b1_20200101" if dated else f"b1_t{0:0{len(str(t - 1))}d}")


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as f:
        frame.to_csv(f, index=False)
    return path


def _cerrado_head(n: int = 46) -> pd.DataFrame:
    return pd.read_csv(CERRADO).head(n)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: f.drop(columns=["label"]), "lacks column(s) ['label']"),
        (lambda f: f.iloc[:-1], "different numbers of dates"),
        (lambda f: f.assign(NDVI=f["NDVI"].where(f.index != 3)), "missing value"),
        (lambda f: f.assign(EVI="high"), "is not numeric"),
        (lambda f: f.assign(date=f["date"].where(f.index != 5, "yesterday")), "cannot be parsed"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "two rows for the same date"),
    ],
)
def test_malformed_tables_are_refused(tmp_path: Path, change: object, words: str) -> None:
    path = _write(tmp_path, change(_cerrado_head()))  # type: ignore[operator]
    with pytest.raises(InputDataError) as err:
        read_sample_table(path)
    assert words in str(err.value)
    assert "Fix:" in str(err.value)


def test_dates_naming_is_refused_for_samples_of_different_years() -> None:
    with pytest.raises(InputDataError, match="time_naming='index'"):
        read_sample_table(CERRADO, time_naming="date")


def test_unknown_band_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"choose bands among \['NDVI', 'EVI'\]"):
        read_sample_table(CERRADO, bands=["RED"])
    with pytest.raises(InputDataError, match="does not exist"):
        read_sample_table(tmp_path / "nope.csv")


# --- wide form -----------------------------------------------------------------------------------


def _same_table(a: SampleTable, b: SampleTable) -> None:
    np.testing.assert_array_equal(a.features, b.features)
    assert a.feature_names == b.feature_names
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.sample_ids, b.sample_ids)
    np.testing.assert_array_equal(a.location_ids, b.location_ids)
    np.testing.assert_array_equal(a.longitude, b.longitude)
    assert a.legend == b.legend
    assert [x.lower() for x in a.bands] == [x.lower() for x in b.bands]


@pytest.mark.parametrize("source", [CERRADO, MODIS_NDVI, RONDONIA], ids=lambda p: p.name)
def test_wide_form_round_trips_with_the_long_form(tmp_path: Path, source: Path) -> None:
    long = read_sample_table(source)
    wide = long.frame()
    # Rows, metadata and the dates of each band in another order (band order is column order).
    wide = wide.sample(frac=1.0, random_state=3)
    meta = [c for c in wide.columns if c not in long.feature_names]
    n = len(long.feature_names) // len(long.bands)
    blocks = [list(long.feature_names[i : i + n]) for i in range(0, len(long.feature_names), n)]
    wide = wide[[*meta[::-1][:2], *(c for b in blocks for c in b[::-1]), *meta[::-1][2:]]]
    csv, parquet = tmp_path / "wide.csv.gz", tmp_path / "wide.parquet"
    wide.to_csv(csv, index=False)
    wide.to_parquet(parquet, index=False)
    for path in (csv, parquet):
        _same_table(read_sample_table(path), long)


def test_wide_form_values_come_from_the_right_cells() -> None:
    frame = pd.DataFrame(
        {
            "label": ["b", "a", "b"],
            "sample_id": [30, 10, 20],
            "NDVI_20200117": [0.2, 0.5, 0.8],
            "NDVI_20200101": [0.1, 0.4, 0.7],
            "EVI_20200101": [1.1, 1.4, 1.7],
            "EVI_20200117": [1.2, 1.5, 1.8],
        }
    )
    table = sample_table_from_frame(frame)
    assert table.feature_names == ("ndvi_20200101", "ndvi_20200117", "evi_20200101", "evi_20200117")
    np.testing.assert_array_equal(table.sample_ids, [10, 20, 30])
    np.testing.assert_array_equal(
        table.features,
        np.array([[0.4, 0.5, 1.4, 1.5], [0.7, 0.8, 1.7, 1.8], [0.1, 0.2, 1.1, 1.2]], np.float32),
    )
    assert [c.name for c in table.legend] == ["a", "b"]
    np.testing.assert_array_equal(table.codes, [1, 2, 2])
    # No coordinates: every sample is its own place.
    np.testing.assert_array_equal(table.location_ids, [0, 1, 2])
    by_position = sample_table_from_frame(frame, time_naming="index", bands=["evi"])
    assert by_position.feature_names == ("evi_t0", "evi_t1")
    np.testing.assert_array_equal(by_position.features, table.features[:, 2:])


def test_wide_form_by_position_is_renumbered_like_the_long_form() -> None:
    columns = {f"b1_t{i}": [float(i)] for i in range(11)}
    table = sample_table_from_frame(pd.DataFrame({"label": ["x"], **columns}))
    assert table.feature_names[0] == "b1_t00" and table.feature_names[-1] == "b1_t10"
    np.testing.assert_array_equal(table.features[0], np.arange(11, dtype=np.float32))
    with pytest.raises(InputDataError, match="time_naming='index'"):
        sample_table_from_frame(pd.DataFrame({"label": ["x"], **columns}), time_naming="date")


@settings(max_examples=25)
@given(
    values=st.integers(1, 5).flatmap(
        lambda n: st.integers(1, 4).flatmap(
            lambda t: st.lists(
                st.floats(-1e3, 1e3, width=32), min_size=n * t * 2, max_size=n * t * 2
            ).map(lambda v: np.array(v, dtype=np.float32).reshape(n, t, 2))
        )
    ),
    same_dates=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_long_and_wide_forms_agree(values: np.ndarray, same_dates: bool, seed: int) -> None:
    long = sample_table_from_frame(_long_table(values, same_dates))
    wide = long.frame()
    rng = np.random.default_rng(seed)
    t = values.shape[1]
    columns = [*wide.columns[1 + 2 * t :], *wide.columns[1 : 1 + t][rng.permutation(t)]]
    columns += [*wide.columns[1 + t : 1 + 2 * t][rng.permutation(t)], "sample_id"]
    wide = wide.iloc[rng.permutation(len(wide))][columns]
    _same_table(sample_table_from_frame(wide, form="wide"), long)


def _wide_head() -> pd.DataFrame:
    return read_sample_table(CERRADO).frame().head(8)


def _rename(frame: pd.DataFrame, old: str, new: str) -> pd.DataFrame:
    return frame.rename(columns={old: new})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: f.drop(columns=["label"]), "lacks the column 'label'"),
        (lambda f: f.assign(ndvi_t03=f["ndvi_t03"].where(f.index != 2)), "'ndvi_t03' of wide"),
        (lambda f: f.assign(evi_t10=f["evi_t10"].where(f.index != 2)), "a gap in the series"),
        (lambda f: f.drop(columns=["ndvi_t05", "evi_t05"]), "position(s) 5 missing"),
        (lambda f: f.drop(columns=["evi_t22"]), "band 'evi' has no column for position 22"),
        (lambda f: f.assign(NDVI_t04=f["ndvi_t04"]), "(a duplicate date)"),
        (lambda f: f.assign(ndvi_t4=f["ndvi_t04"]), "are both band 'ndvi' at position 4"),
        (lambda f: f.assign(ndvi_20200101=1.0), "mixes dated feature columns"),
        (lambda f: f.assign(cloudy=1), "column 'cloudy' of wide table"),
        (lambda f: f.assign(evi_t00="x"), "'evi_t00' of wide table 'bad.csv.gz' is not numeric"),
        (lambda f: f.assign(sample_id=[1, 1, *f["sample_id"][2:]]), "on more than one row"),
        (lambda f: f.drop(columns=["latitude"]), "longitude without latitude"),
        (lambda f: f.assign(label=f["label"].where(f.index != 0)), "column 'label'"),
    ],
)
def test_malformed_wide_tables_are_refused(tmp_path: Path, change: object, words: str) -> None:
    path = _write(tmp_path, change(_wide_head()))  # type: ignore[operator]
    with pytest.raises(InputDataError) as err:
        read_sample_table(path)
    assert words in str(err.value).replace(str(tmp_path) + "/", "")
    assert "Fix:" in str(err.value)


def test_wide_dates_are_checked(tmp_path: Path) -> None:
    frame = read_sample_table(RONDONIA).frame().head(4)
    with pytest.raises(InputDataError, match=r"'20181345' is not a date \(YYYYMMDD\)"):
        sample_table_from_frame(_rename(frame, "ndvi_20180712", "ndvi_20181345"))
    moved = _rename(frame, "ndvi_20180712", "ndvi_20180713")
    with pytest.raises(InputDataError) as err:
        sample_table_from_frame(moved)
    assert "band 'ndvi' has no column for 2018-07-12, which band 'evi' has" in str(err.value)
    # A header written twice in a CSV is read by pandas as "name.1": still refused by name.
    path = tmp_path / "twice.csv"
    path.write_text("label,b_t0,b_t0\nx,1,2\n")
    with pytest.raises(InputDataError, match="has the column 'b_t0' more than once"):
        read_sample_table(path)


def test_group_column_in_both_forms(tmp_path: Path) -> None:
    long = pd.read_csv(MODIS_NDVI)
    long["polygon"] = long["sample_id"] // 10
    table = sample_table_from_frame(long, group_column="polygon")
    assert table.bands == ("NDVI",)  # the group column is no band
    np.testing.assert_array_equal(table.groups, np.asarray(table.sample_ids) // 10)
    wide = sample_table_from_frame(table.frame(), group_column="polygon")
    np.testing.assert_array_equal(wide.groups, table.groups)
    long.loc[long.index[3], "polygon"] = -1
    with pytest.raises(InputDataError, match="changes within sample"):
        sample_table_from_frame(long, group_column="polygon")
    with pytest.raises(InputDataError, match="no group column 'field'"):
        sample_table_from_frame(long, group_column="field")


# --- a table against a model's feature contract --------------------------------------------------


def _contract(names: list[str]) -> ModelContract:
    return ModelContract(
        estimator="sklearn.ensemble.RandomForestClassifier",
        params={},
        feature_names=tuple(names),
        classes=(1, 2),
    )


def test_a_table_is_conformed_to_the_model_features() -> None:
    table = read_sample_table(RONDONIA)  # bands EVI, NDVI, 25 dates each
    dates = [n.split("_")[1] for n in table.feature_names[:25]]
    # The model has NDVI first: the table is reordered, not refused.
    dated = _contract([f"ndvi_{d}" for d in dates] + [f"evi_{d}" for d in dates])
    conformed = conform_to_contract(table, dated)
    assert conformed.feature_names == dated.feature_names
    np.testing.assert_array_equal(conformed.features[:, :25], table.features[:, 25:])
    np.testing.assert_array_equal(conformed.features[:, 25:], table.features[:, :25])
    check_features(dated, conformed.feature_names)
    # A model by position takes the dated table by position; extra bands are left out.
    positions = _contract([f"ndvi_t{i:02d}" for i in range(25)])
    conformed = conform_to_contract(table, positions)
    np.testing.assert_array_equal(conformed.features, table.features[:, 25:])
    assert conformed.bands == ("NDVI",)


@pytest.mark.parametrize(
    ("names", "words"),
    [
        ([f"red_t{i:02d}" for i in range(25)], "the model needs band(s) ['red'], the table has"),
        ([f"ndvi_t{i:02d}" for i in range(23)], "needs 23 dates of band 'ndvi'"),
        (
            [f"ndvi_{d:%Y%m%d}" for d in pd.date_range("2019-07-12", periods=25, freq="16D")],
            "not the model's date grid: 25 of 25 differ (position 0: the table has 20180712, "
            "the model expects 20190712)",
        ),
        (["ndvi_t00", "elevation"], "feature(s) elevation, which are not band time series"),
    ],
)
def test_a_table_that_does_not_fit_the_model_is_refused(names: list[str], words: str) -> None:
    with pytest.raises(InputDataError) as err:
        conform_to_contract(read_sample_table(RONDONIA), _contract(names))
    assert words in str(err.value)
    assert "Fix:" in str(err.value)


def test_a_position_table_is_refused_by_a_dated_model() -> None:
    table = read_sample_table(CERRADO)
    dated = _contract([f"ndvi_{d:%Y%m%d}" for d in pd.date_range("2000-09-13", periods=23)])
    with pytest.raises(InputDataError, match="the model's features are dated"):
        conform_to_contract(table, dated)
