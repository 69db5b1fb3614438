"""Labelled pixel time-series tables (sits long format, or wide form) as feature matrices.

(Over 600 lines on purpose: the two table forms share one set of rules and one conforming
step to a model's features; split, each half would restate them.)

**Long form** (sits): one row per sample and date, ``sample_id, longitude, latitude, start_date,
end_date, label, n_obs, <band columns...>, date`` (CSV, gzipped CSV or Parquet). It is pivoted to
one row per sample with the features in the cube's order, bands then dates:
``<band>_<YYYYMMDD>`` when every sample has the same dates, else ``<band>_t<NN>`` by date index
(samples of different years, aligned on their position in the series).

**Wide form** (iota2, eo-learn, a pivoted sits table, :meth:`SampleTable.frame`): one row per
sample, a ``label`` column, optionally ``sample_id``, ``longitude``/``latitude`` and the other
long-form columns, and one column per band and time, ``<band>_<YYYYMMDD>`` (observation date) or
``<band>_t<NN>`` (position in the series), in any order. Rules, each refused with a message
naming the column: one naming for all columns (dates or positions), the same dates for every
band, no repeated band and date, positions ``t0 .. tN-1`` without a gap, numeric values and no
empty cell (a gap in a series must be filled before, sitsflow does not guess it), one row per
sample id. The form is detected by the ``date`` column (long) or its absence (wide).

Both forms give the same :class:`SampleTable` for the same samples (rows sorted by sample id).

Samples taken at the same place in different years are nearly the same signal; ``location_ids``
groups them so that cross-validation keeps them on one side. A polygon (or any other) id column
named by ``group_column`` is kept as ``groups``.

:func:`conform_to_contract` checks a table against the features a trained model needs (its
``model.json``): the same bands and number of dates, and the same dates when both are dated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.errors import InputDataError
from pipeline.learn.contract import ModelContract
from pipeline.model import ClassInfo, position_tokens

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
#: Columns of a wide table that are not features (``code`` and ``location_id`` are written by
#: :meth:`SampleTable.frame`; ``code`` is recomputed from the labels, ``location_id`` used only
#: when the table has no coordinates).
WIDE_META_COLUMNS = (*(c for c in META_COLUMNS if c != "date"), "code", "location_id")
TimeNaming = Literal["auto", "date", "index"]
TableForm = Literal["auto", "long", "wide"]

#: A feature column of a wide table: ``<band>_<YYYYMMDD>`` or ``<band>_t<NN>``.
FEATURE_NAME = re.compile(r"^(?P<band>.+)_(?P<time>\d{8}|[tT]\d+)$")
# pandas renames a repeated CSV header "a" to "a.1", "a.2"...
_RENAMED_DUPLICATE = re.compile(r"^(?P<name>.+)\.(?P<n>\d+)$")
_SHOWN = 5  # how many offending values a message lists


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
    groups: np.ndarray | None = None
    """(n_samples,) the values of ``group_column`` (a polygon id...), when one was named."""
    group_column: str | None = None

    @property
    def codes(self) -> np.ndarray:
        """(n_samples,) int64 class codes of the legend."""
        code_of = {c.name: c.code for c in self.legend}
        return np.array([code_of[name] for name in self.labels], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def frame(self) -> pd.DataFrame:
        """The wide table as a DataFrame: sample id, features, then label, code and location
        columns (and the group column); :func:`read_sample_table` reads it back."""
        out = pd.DataFrame(self.features, columns=list(self.feature_names))
        out.insert(0, "sample_id", self.sample_ids)
        out["label"] = self.labels
        out["code"] = self.codes
        out["location_id"] = self.location_ids
        out["longitude"] = self.longitude
        out["latitude"] = self.latitude
        if self.groups is not None and self.group_column is not None:
            out[self.group_column] = self.groups
        return out


def _legend(labels: np.ndarray) -> tuple[ClassInfo, ...]:
    return tuple(ClassInfo(code, name) for code, name in enumerate(sorted(set(labels)), start=1))


def _listed(values: Sequence[object]) -> str:
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    return f"{shown}, ... ({len(values)} in all)" if len(values) > _SHOWN else shown


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
            fix="give a CSV (optionally gzipped) or Parquet file in the long or wide form",
        ) from None
    raise InputDataError(
        f"sample table {str(path)!r} is neither CSV nor Parquet",
        fix="give a .csv, .csv.gz or .parquet file",
    )


def _bands(
    table: pd.DataFrame, name: str, bands: list[str] | None, group_column: str | None
) -> list[str]:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(
            f"sample table {name!r} lacks column(s) {missing} (it has {list(table.columns)})",
            fix="give a table in the sits long format: one row per sample and date with "
            "sample_id, longitude, latitude, label, date and one column per band",
        )
    found = [c for c in table.columns if c not in META_COLUMNS and c != group_column]
    chosen = found if bands is None else bands
    unknown = [b for b in chosen if b not in found]
    if unknown or not chosen:
        raise InputDataError(
            f"sample table {name!r} has band columns {found}, not {unknown or chosen}",
            fix=f"choose bands among {found}",
        )
    for band in chosen:
        values = table[band]
        if not pd.api.types.is_numeric_dtype(values):
            raise InputDataError(
                f"band column {band!r} of {name!r} is not numeric (e.g. {values.iloc[0]!r})",
                fix="give numeric band values (a dot as decimal separator)",
            )
        if values.isna().any():
            where = table.loc[values.isna(), "sample_id"].iloc[0]
            raise InputDataError(
                f"band {band!r} of {name!r} has {int(values.isna().sum())} missing "
                f"value(s) (first in sample {where})",
                fix="fill or drop the incomplete samples before reading the table",
            )
    return chosen


def _groups(
    table: pd.DataFrame, name: str, group_column: str | None, key: str | None
) -> pd.Series | None:
    """The group column, one value per row of ``table`` (constant per ``key`` when given)."""
    if group_column is None:
        return None
    if group_column not in table.columns:
        raise InputDataError(
            f"sample table {name!r} has no group column {group_column!r} (it has "
            f"{list(table.columns)})",
            fix="name an existing column (a polygon or field id), or group by location",
        )
    values = table[group_column]
    if values.isna().any():
        raise InputDataError(
            f"group column {group_column!r} of {name!r} has {int(values.isna().sum())} empty "
            "cell(s)",
            fix="give every sample its polygon (group) id",
        )
    if key is not None:
        varying = table.groupby(key)[group_column].nunique()
        if (varying > 1).any():
            odd = varying[varying > 1].index.tolist()
            raise InputDataError(
                f"group column {group_column!r} of {name!r} changes within sample(s) "
                f"{_listed(odd)}",
                fix="give all rows of a sample the same group id",
            )
    return values


def _from_long(
    table: pd.DataFrame,
    name: str,
    bands: list[str] | None,
    time_naming: TimeNaming,
    group_column: str | None,
) -> SampleTable:
    band_columns = _bands(table, name, bands, group_column)
    _groups(table, name, group_column, "sample_id")
    table = table.assign(date=pd.to_datetime(table["date"], errors="coerce"))
    if table["date"].isna().any():
        raise InputDataError(
            f"sample table {name!r} has dates that cannot be parsed",
            fix="write dates as YYYY-MM-DD",
        )
    table = table.sort_values(["sample_id", "date"], kind="stable")
    if table.duplicated(["sample_id", "date"]).any():
        dup = table.loc[table.duplicated(["sample_id", "date"]), "sample_id"].iloc[0]
        raise InputDataError(
            f"sample {dup} of {name!r} has two rows for the same date",
            fix="keep one row per sample and date",
        )
    sizes = table.groupby("sample_id", sort=True).size()
    if sizes.nunique() != 1:
        common = int(sizes.mode().iloc[0])
        odd = sizes[sizes != common]
        raise InputDataError(
            f"samples of {name!r} have different numbers of dates: most have {common}, "
            f"sample(s) {odd.index[:5].tolist()} have {odd.iloc[:5].tolist()}",
            fix="give every sample the same dates (or the same number of dates)",
        )
    n_dates = int(sizes.iloc[0])
    table = table.assign(step=table.groupby("sample_id", sort=True).cumcount())
    dates_of_step = table.groupby("step")["date"].nunique()
    same_dates = bool((dates_of_step == 1).all())
    if time_naming == "date" and not same_dates:
        raise InputDataError(
            f"samples of {name!r} are on different dates ({table['date'].nunique()} "
            f"distinct dates for {n_dates} per sample), so features cannot be named by date",
            fix="use time_naming='index' (features <band>_t<NN> by position in the series)",
        )
    by_date = time_naming == "date" or (time_naming == "auto" and same_dates)
    if by_date:
        first_sample = table[table["sample_id"] == table["sample_id"].iloc[0]]
        tokens = [f"{d:%Y%m%d}" for d in first_sample["date"]]
    else:
        tokens = position_tokens(n_dates)
    wide = table.pivot(index="sample_id", columns="step", values=band_columns)
    features = np.concatenate(
        [wide[band].to_numpy(dtype=np.float32) for band in band_columns], axis=1
    )
    names = tuple(f"{band.lower()}_{token}" for band in band_columns for token in tokens)
    meta = table.drop_duplicates("sample_id").set_index("sample_id").loc[wide.index]
    location = pd.MultiIndex.from_arrays([meta["longitude"], meta["latitude"]])
    location_ids, _ = pd.factorize(location)
    labels = meta["label"].astype(str).to_numpy()
    return SampleTable(
        features=features,
        feature_names=names,
        labels=labels,
        sample_ids=wide.index.to_numpy(),
        longitude=meta["longitude"].to_numpy(dtype=np.float64),
        latitude=meta["latitude"].to_numpy(dtype=np.float64),
        location_ids=location_ids.astype(np.int64),
        legend=_legend(labels),
        bands=tuple(band_columns),
        groups=None if group_column is None else meta[group_column].to_numpy(),
        group_column=group_column,
    )


# --- wide form -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Feature:
    column: str
    band: str
    """As written in the column name."""
    time: date | int
    """The observation date (``<band>_<YYYYMMDD>``) or the position (``<band>_t<NN>``)."""


def _time_text(time: date | int) -> str:
    return time.isoformat() if isinstance(time, date) else f"position {time}"


_WIDE_FIX = (
    "name feature columns <band>_<YYYYMMDD> (date of the observation) or <band>_t<NN> "
    "(position in the series), one per band and time"
)


def _parse_feature_columns(table: pd.DataFrame, name: str, known: set[str]) -> list[_Feature]:
    parsed: list[_Feature] = []
    seen: dict[tuple[str, date | int], str] = {}
    columns = [str(c) for c in table.columns]
    for column in columns:
        if column in known:
            continue
        renamed = _RENAMED_DUPLICATE.match(column)
        if renamed and renamed["name"] in columns:
            raise InputDataError(
                f"wide table {name!r} has the column {renamed['name']!r} more than once (the "
                f"repeat was read as {column!r})",
                fix="keep one column per band and date",
            )
        match = FEATURE_NAME.match(column)
        if match is None:
            raise InputDataError(
                f"column {column!r} of wide table {name!r} is neither a table column "
                f"({', '.join(sorted(known))}) nor a feature <band>_<YYYYMMDD> or <band>_t<NN>",
                fix=f"rename or drop {column!r}; {_WIDE_FIX}",
            )
        token = match["time"]
        time: date | int
        if token[0] in "tT":
            time = int(token[1:])
        else:
            try:
                time = datetime.strptime(token, "%Y%m%d").date()
            except ValueError:
                raise InputDataError(
                    f"column {column!r} of wide table {name!r}: {token!r} is not a date (YYYYMMDD)",
                    fix=f"correct the date in the column name; {_WIDE_FIX}",
                ) from None
        key = (match["band"].lower(), time)
        if key in seen:
            raise InputDataError(
                f"columns {seen[key]!r} and {column!r} of wide table {name!r} are both band "
                f"{match['band']!r} at {_time_text(time)} (a duplicate date)",
                fix="keep one column per band and date: drop or rename one of them",
            )
        seen[key] = column
        parsed.append(_Feature(column, match["band"], time))
    if not parsed:
        raise InputDataError(
            f"wide table {name!r} has no feature column (its columns are {columns})",
            fix=_WIDE_FIX,
        )
    dated = [f for f in parsed if isinstance(f.time, date)]
    if dated and len(dated) != len(parsed):
        by_position = next(f for f in parsed if not isinstance(f.time, date))
        raise InputDataError(
            f"wide table {name!r} mixes dated feature columns (e.g. {dated[0].column!r}) and "
            f"columns by position (e.g. {by_position.column!r})",
            fix="name all feature columns by date (<band>_<YYYYMMDD>) or all by position "
            "(<band>_t<NN>)",
        )
    return parsed


def _wide_bands(
    features: list[_Feature], name: str, bands: list[str] | None
) -> tuple[list[str], list[date | int]]:
    """The chosen bands (in order of first column) and their common, sorted times."""
    found: list[str] = []
    for f in features:
        if f.band.lower() not in (b.lower() for b in found):
            found.append(f.band)
    if bands is None:
        chosen = found
    else:
        by_lower = {b.lower(): b for b in found}
        unknown = [b for b in bands if b.lower() not in by_lower]
        if unknown or not bands:
            raise InputDataError(
                f"wide table {name!r} has bands {found}, not {unknown or bands}",
                fix=f"choose bands among {found}",
            )
        chosen = [by_lower[b.lower()] for b in bands]
    times_of = {
        band: sorted(f.time for f in features if f.band.lower() == band.lower()) for band in chosen
    }
    reference = chosen[0]
    for band in chosen[1:]:
        mine, theirs = set(times_of[band]), set(times_of[reference])
        for have, lack, lacking in ((theirs, mine, band), (mine, theirs, reference)):
            missing = sorted(have - lack)
            if missing:
                other = reference if lacking == band else band
                raise InputDataError(
                    f"bands of wide table {name!r} do not match: band {lacking!r} has no "
                    f"column for {_listed([_time_text(t) for t in missing])}, which band "
                    f"{other!r} has",
                    fix="give every band a column for each date (gap-fill the missing "
                    "observations), or choose the bands that match",
                )
    times = times_of[reference]
    positions = [t for t in times if not isinstance(t, date)]
    if positions and positions != list(range(len(positions))):
        missing = sorted(set(range(max(positions) + 1)) - set(positions))
        raise InputDataError(
            f"wide table {name!r} has feature positions {_listed(positions)}: position(s) "
            f"{_listed(missing)} missing (a gap in the series)",
            fix="number positions t00, t01, ... without gaps, filling the missing dates, "
            "or name the columns by date",
        )
    return chosen, times


def _from_wide(
    table: pd.DataFrame,
    name: str,
    bands: list[str] | None,
    time_naming: TimeNaming,
    group_column: str | None,
) -> SampleTable:
    if "label" not in table.columns:
        raise InputDataError(
            f"wide table {name!r} lacks the column 'label' (it has {list(table.columns)})",
            fix="add a label column with the class name of each sample (or, for the long form, "
            "a date column)",
        )
    known = set(WIDE_META_COLUMNS) | ({group_column} if group_column else set())
    features = _parse_feature_columns(table, name, known)
    chosen, times = _wide_bands(features, name, bands)
    dated = isinstance(times[0], date)
    if time_naming == "date" and not dated:
        raise InputDataError(
            f"feature columns of wide table {name!r} are named by position in the series, so "
            "features cannot be named by date",
            fix="use time_naming='index', or name the columns <band>_<YYYYMMDD>",
        )
    if "label" in table.columns and table["label"].isna().any():
        raise InputDataError(
            f"column 'label' of wide table {name!r} has {int(table['label'].isna().sum())} empty "
            "cell(s)",
            fix="give every sample a class name, or drop the unlabelled samples",
        )
    groups = _groups(table, name, group_column, None)
    if "sample_id" in table.columns:
        repeated = table["sample_id"][table["sample_id"].duplicated()]
        if len(repeated):
            raise InputDataError(
                f"sample id(s) {_listed(repeated.unique().tolist())} of wide table {name!r} are "
                "on more than one row",
                fix="give one row per sample in the wide form (one row per sample and date is "
                "the long form, with a date column)",
            )
        order = np.argsort(table["sample_id"].to_numpy(), kind="stable")
        sample_ids = table["sample_id"].to_numpy()[order]
    else:
        order = np.arange(len(table))
        sample_ids = order.copy()
    column_of = {(f.band.lower(), f.time): f.column for f in features}
    columns = [column_of[(band.lower(), t)] for band in chosen for t in times]
    for column in columns:
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values):
            raise InputDataError(
                f"feature column {column!r} of wide table {name!r} is not numeric (e.g. "
                f"{values.dropna().iloc[0] if values.notna().any() else values.iloc[0]!r})",
                fix="give numeric band values (a dot as decimal separator)",
            )
        if values.isna().any():
            rows = np.flatnonzero(values.isna().to_numpy())
            first = table["sample_id"].iloc[rows[0]] if "sample_id" in table else rows[0]
            raise InputDataError(
                f"feature column {column!r} of wide table {name!r} has {len(rows)} empty "
                f"cell(s) (first in sample {first}): a gap in the series",
                fix="gap-fill the series (or drop the incomplete samples) before reading the table",
            )
    values = table[columns].to_numpy(dtype=np.float32)[order]
    if dated and time_naming != "index":
        tokens = [f"{t:%Y%m%d}" for t in times]
    else:
        tokens = position_tokens(len(times))
    names = tuple(f"{band.lower()}_{token}" for band in chosen for token in tokens)
    has_lon, has_lat = "longitude" in table.columns, "latitude" in table.columns
    if has_lon != has_lat:
        raise InputDataError(
            f"wide table {name!r} has {'longitude' if has_lon else 'latitude'} without "
            f"{'latitude' if has_lon else 'longitude'}",
            fix="give both coordinates, or neither",
        )
    if has_lon:
        longitude = table["longitude"].to_numpy(dtype=np.float64)[order]
        latitude = table["latitude"].to_numpy(dtype=np.float64)[order]
        if np.isnan(longitude).any() or np.isnan(latitude).any():
            raise InputDataError(
                f"coordinates of wide table {name!r} have empty cells",
                fix="give every sample its longitude and latitude, or drop both columns",
            )
        location_ids, _ = pd.factorize(pd.MultiIndex.from_arrays([longitude, latitude]))
    else:
        longitude = np.full(len(table), np.nan)
        latitude = np.full(len(table), np.nan)
        if "location_id" in table.columns:
            location_ids, _ = pd.factorize(table["location_id"].to_numpy()[order])
        else:
            location_ids = np.arange(len(table))
    labels = table["label"].astype(str).to_numpy()[order]
    return SampleTable(
        features=values,
        feature_names=names,
        labels=labels,
        sample_ids=sample_ids,
        longitude=longitude,
        latitude=latitude,
        location_ids=np.asarray(location_ids, dtype=np.int64),
        legend=_legend(labels),
        bands=tuple(chosen),
        groups=None if groups is None else groups.to_numpy()[order],
        group_column=group_column,
    )


def sample_table_from_frame(
    table: pd.DataFrame,
    *,
    name: str = "<DataFrame>",
    bands: list[str] | None = None,
    time_naming: TimeNaming = "auto",
    form: TableForm = "auto",
    group_column: str | None = None,
) -> SampleTable:
    """A :class:`SampleTable` from a long or wide DataFrame (``name`` is used in messages)."""
    if form == "auto":
        form = "long" if "date" in table.columns else "wide"
    if form == "long":
        return _from_long(table, name, bands, time_naming, group_column)
    return _from_wide(table, name, bands, time_naming, group_column)


def read_sample_table(
    path: str | Path,
    *,
    bands: list[str] | None = None,
    time_naming: TimeNaming = "auto",
    form: TableForm = "auto",
    group_column: str | None = None,
) -> SampleTable:
    """Read a long-form (pivoted; every sample must have the same number of dates) or wide-form
    table; ``form='auto'`` takes a table with a ``date`` column as long, else as wide."""
    path = Path(path)
    return sample_table_from_frame(
        _read(path),
        name=str(path),
        bands=bands,
        time_naming=time_naming,
        form=form,
        group_column=group_column,
    )


# --- the table against a model's contract --------------------------------------------------------


def _series_of(names: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Feature names grouped by band (lower case, in order) and the names that are no series."""
    by_band: dict[str, list[str]] = {}
    other: list[str] = []
    for feature in names:
        match = FEATURE_NAME.match(feature)
        if match is None:
            other.append(feature)
        else:
            by_band.setdefault(match["band"].lower(), []).append(feature)
    return by_band, other


def _token(feature: str) -> str:
    match = FEATURE_NAME.match(feature)
    assert match is not None  # only called on names _series_of accepted
    return match["time"].lower()


def conform_to_contract(table: SampleTable, contract: ModelContract) -> SampleTable:
    """The table with exactly the model's features, in its order, or an error saying what differs.

    The model's bands must all be in the table (extra bands are dropped) with the same number of
    dates. When both name features by date the dates must be the same; a model whose features
    are positions (``<band>_t<NN>``) takes a dated table by position. Band names compare without
    regard to case.
    """
    needed, other = _series_of(contract.feature_names)
    if other:
        raise InputDataError(
            f"the model needs feature(s) {_listed(other)}, which are not band time series "
            "(<band>_<YYYYMMDD> or <band>_t<NN>); a sample table cannot provide them",
            fix="train the model on this table's features, or extract samples from a cube "
            "that has these features",
        )
    have, _ = _series_of(table.feature_names)
    missing = [band for band in needed if band not in have]
    if missing:
        raise InputDataError(
            f"the model needs band(s) {missing}, the table has {list(have)} (model bands: "
            f"{list(needed)})",
            fix="give a table with the model's bands (rename the band columns if they only "
            "differ in name), or train a model on this table's bands",
        )
    picked: list[str] = []
    for band, model_names in needed.items():
        table_names = have[band]
        if len(table_names) != len(model_names):
            raise InputDataError(
                f"the model needs {len(model_names)} dates of band {band!r} ({model_names[0]} "
                f".. {model_names[-1]}), the table has {len(table_names)} ({table_names[0]} .. "
                f"{table_names[-1]})",
                fix="extract the samples on the model's date grid (the same period and date "
                "step), or train a model on this table",
            )
        model_tokens = [_token(n) for n in model_names]
        table_tokens = [_token(n) for n in table_names]
        model_dated = not model_tokens[0].startswith("t")
        table_dated = not table_tokens[0].startswith("t")
        if model_dated and not table_dated:
            raise InputDataError(
                f"the model's features are dated ({model_names[0]} .. {model_names[-1]}), the "
                f"table's are positions in the series ({table_names[0]} ..), so its dates "
                "cannot be checked",
                fix="give a table whose features are named by date, or train a model on "
                "position-named features",
            )
        if model_dated and model_tokens != table_tokens:
            differ = [
                i for i, (a, b) in enumerate(zip(model_tokens, table_tokens, strict=True)) if a != b
            ]
            first = differ[0]
            raise InputDataError(
                f"the table's dates of band {band!r} are not the model's date grid: "
                f"{len(differ)} of {len(model_tokens)} differ (position {first}: the table has "
                f"{table_tokens[first]}, the model expects {model_tokens[first]})",
                fix="extract the samples on the model's dates, or train on features by "
                "position in the series (time_naming='index')",
            )
        picked.extend(table_names)
    index = {n: i for i, n in enumerate(table.feature_names)}
    columns = [index[n] for n in picked]
    bands_of = {b.lower(): b for b in table.bands}
    return replace(
        table,
        features=np.ascontiguousarray(table.features[:, columns]),
        feature_names=tuple(contract.feature_names),
        bands=tuple(bands_of.get(b, b) for b in needed),
    )
