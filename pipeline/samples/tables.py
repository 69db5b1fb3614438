"""Labelled pixel time-series tables (the sits long format) as feature matrices.

The long format has one row per sample and date: ``sample_id, longitude, latitude, start_date,
end_date, label, n_obs, <band columns...>, date`` (CSV, gzipped CSV or Parquet). It is pivoted to
one row per sample with the features in the cube's order, bands then dates:
``<band>_<YYYYMMDD>`` when every sample has the same dates, else ``<band>_t<NN>`` by date index
(samples of different years, aligned on their position in the series).

Samples taken at the same place in different years are nearly the same signal; ``location_ids``
groups them so that cross-validation keeps them on one side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.errors import InputDataError
from pipeline.model import ClassInfo

META_COLUMNS = (
    "sample_id",
    "longitude",
    "latitude",
    "start_date",
    "end_date",
    "label",
    "n_obs",
    "date",
)
REQUIRED_COLUMNS = ("sample_id", "longitude", "latitude", "label", "date")
TimeNaming = Literal["auto", "date", "index"]


@dataclass(frozen=True)
class SampleTable:
    """One row per sample: features in the cube's order, label, location and class legend."""

    features: np.ndarray
    """(n_samples, n_features) float32."""
    feature_names: tuple[str, ...]
    labels: np.ndarray
    """(n_samples,) class names as in the file."""
    sample_ids: np.ndarray
    longitude: np.ndarray
    latitude: np.ndarray
    location_ids: np.ndarray
    """(n_samples,) int: equal for samples at the same longitude/latitude."""
    legend: tuple[ClassInfo, ...]
    """Class codes 1..K, in sorted order of the class names."""
    bands: tuple[str, ...]

    @property
    def codes(self) -> np.ndarray:
        """(n_samples,) int64 class codes of the legend."""
        code_of = {c.name: c.code for c in self.legend}
        return np.array([code_of[name] for name in self.labels], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def frame(self) -> pd.DataFrame:
        """The wide table as a DataFrame (features, then label, code and location columns)."""
        out = pd.DataFrame(self.features, columns=list(self.feature_names))
        out["label"] = self.labels
        out["code"] = self.codes
        out["location_id"] = self.location_ids
        out["longitude"] = self.longitude
        out["latitude"] = self.latitude
        return out


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputDataError(
            f"sample table {str(path)!r} does not exist", fix="check the path of the table"
        )
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".geoparquet")):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip")):
            return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputDataError(
            f"sample table {str(path)!r} cannot be read ({type(exc).__name__}: {exc})",
            fix="give a CSV (optionally gzipped) or Parquet file in the sits long format",
        ) from None
    raise InputDataError(
        f"sample table {str(path)!r} is neither CSV nor Parquet",
        fix="give a .csv, .csv.gz or .parquet file",
    )


def _bands(table: pd.DataFrame, path: Path, bands: list[str] | None) -> list[str]:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(
            f"sample table {str(path)!r} lacks column(s) {missing} (it has {list(table.columns)})",
            fix="give a table in the sits long format: one row per sample and date with "
            "sample_id, longitude, latitude, label, date and one column per band",
        )
    found = [c for c in table.columns if c not in META_COLUMNS]
    chosen = found if bands is None else bands
    unknown = [b for b in chosen if b not in found]
    if unknown or not chosen:
        raise InputDataError(
            f"sample table {str(path)!r} has band columns {found}, not {unknown or chosen}",
            fix=f"choose bands among {found}",
        )
    for band in chosen:
        values = table[band]
        if not pd.api.types.is_numeric_dtype(values):
            raise InputDataError(
                f"band column {band!r} of {str(path)!r} is not numeric (e.g. {values.iloc[0]!r})",
                fix="give numeric band values (a dot as decimal separator)",
            )
        if values.isna().any():
            where = table.loc[values.isna(), "sample_id"].iloc[0]
            raise InputDataError(
                f"band {band!r} of {str(path)!r} has {int(values.isna().sum())} missing "
                f"value(s) (first in sample {where})",
                fix="fill or drop the incomplete samples before reading the table",
            )
    return chosen


def read_sample_table(
    path: str | Path, *, bands: list[str] | None = None, time_naming: TimeNaming = "auto"
) -> SampleTable:
    """Read and pivot a long-format table; every sample must have the same number of dates."""
    path = Path(path)
    table = _read(path)
    band_columns = _bands(table, path, bands)
    table = table.assign(date=pd.to_datetime(table["date"], errors="coerce"))
    if table["date"].isna().any():
        raise InputDataError(
            f"sample table {str(path)!r} has dates that cannot be parsed",
            fix="write dates as YYYY-MM-DD",
        )
    table = table.sort_values(["sample_id", "date"], kind="stable")
    if table.duplicated(["sample_id", "date"]).any():
        dup = table.loc[table.duplicated(["sample_id", "date"]), "sample_id"].iloc[0]
        raise InputDataError(
            f"sample {dup} of {str(path)!r} has two rows for the same date",
            fix="keep one row per sample and date",
        )
    sizes = table.groupby("sample_id", sort=True).size()
    if sizes.nunique() != 1:
        common = int(sizes.mode().iloc[0])
        odd = sizes[sizes != common]
        raise InputDataError(
            f"samples of {str(path)!r} have different numbers of dates: most have {common}, "
            f"sample(s) {odd.index[:5].tolist()} have {odd.iloc[:5].tolist()}",
            fix="give every sample the same dates (or the same number of dates)",
        )
    n_dates = int(sizes.iloc[0])
    table = table.assign(step=table.groupby("sample_id", sort=True).cumcount())
    dates_of_step = table.groupby("step")["date"].nunique()
    same_dates = bool((dates_of_step == 1).all())
    if time_naming == "date" and not same_dates:
        raise InputDataError(
            f"samples of {str(path)!r} are on different dates ({table['date'].nunique()} "
            f"distinct dates for {n_dates} per sample), so features cannot be named by date",
            fix="use time_naming='index' (features <band>_t<NN> by position in the series)",
        )
    by_date = time_naming == "date" or (time_naming == "auto" and same_dates)
    if by_date:
        first_sample = table[table["sample_id"] == table["sample_id"].iloc[0]]
        tokens = [f"{d:%Y%m%d}" for d in first_sample["date"]]
    else:
        width = len(str(n_dates - 1))
        tokens = [f"t{i:0{width}d}" for i in range(n_dates)]
    wide = table.pivot(index="sample_id", columns="step", values=band_columns)
    features = np.concatenate(
        [wide[band].to_numpy(dtype=np.float32) for band in band_columns], axis=1
    )
    names = tuple(f"{band.lower()}_{token}" for band in band_columns for token in tokens)
    meta = table.drop_duplicates("sample_id").set_index("sample_id").loc[wide.index]
    location = pd.MultiIndex.from_arrays([meta["longitude"], meta["latitude"]])
    location_ids, _ = pd.factorize(location)
    labels = meta["label"].astype(str).to_numpy()
    legend = tuple(ClassInfo(code, name) for code, name in enumerate(sorted(set(labels)), start=1))
    return SampleTable(
        features=features,
        feature_names=names,
        labels=labels,
        sample_ids=wide.index.to_numpy(),
        longitude=meta["longitude"].to_numpy(dtype=np.float64),
        latitude=meta["latitude"].to_numpy(dtype=np.float64),
        location_ids=location_ids.astype(np.int64),
        legend=legend,
        bands=tuple(band_columns),
    )
