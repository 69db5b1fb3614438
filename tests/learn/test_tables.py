"""Sample tables in the sits long format: the real files, values traced back to their rows, a
round-trip property, and malformed tables refused with a fix."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputDataError
from pipeline.samples.tables import read_sample_table
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
