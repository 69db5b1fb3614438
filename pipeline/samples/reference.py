"""Reference data: labelled polygons or points, read once and burnt onto the output grid.

A reference feature is one sampling unit: a polygon, or a point (which covers the one pixel it
falls in). Classification reads a class per feature (``label_field``: integer codes, or text
that gets codes 1..K in sorted order of the names), regression a number (``value_field``).
Pixels covered by two or more features are left out, because their label is ambiguous; a warning
says how many.

A feature may carry its own time window (``start_field``/``end_field``): the season it was
observed in. Features of different windows may cover the same ground (a parcel observed in 2016
and in 2017), so each window is burnt on its own (``load_reference(..., window=key)``) and its
pixels are sampled on that window's own date grid.
"""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio import features as rio_features
from rasterio.enums import MergeAlg

from pipeline.errors import InputDataError
from pipeline.model import ClassInfo, GridSpec, PeriodConfig
from pipeline.samples.config import ReferenceConfig
from pipeline.warnings import DataQualityWarning

# A qualitative palette for maps and reports (colour-blind friendly first, then more).
PALETTE = (
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
    "#1f78b4", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99", "#8dd3c7", "#bebada",
)  # fmt: skip

log = logging.getLogger(__name__)

_TEXT_LABEL = "__sitsflow_text_label__"
"""A column holding a reference's text labels while it is loaded (they become the names)."""
_AREAL = ("Polygon", "MultiPolygon")
_PUNCTUAL = ("Point", "MultiPoint")
_POLYGON, _MULTIPOLYGON = int(shapely.GeometryType.POLYGON), int(shapely.GeometryType.MULTIPOLYGON)

Burn = Callable[[gpd.GeoDataFrame, np.ndarray, GridSpec], tuple[np.ndarray, int]]
"""Features, their ids and a grid -> the id raster and the count of pixels several cover."""


@dataclass(frozen=True)
class ReferencePolygons:
    """Reference features on the grid: one row per feature, and the raster of feature ids.

    ``table`` has ``polygon_id``, ``group`` (the split unit), ``name``, and ``label`` (int64,
    classification) or ``value`` (float64, regression); with windows also ``window`` (its key,
    ``YYYYMMDD-YYYYMMDD``), ``window_start`` and ``window_end``; with a split field
    ``fixed_split`` ('train' or 'validation'). ``polygon_ids`` is (height, width) int32, -1
    where no feature (or more than one) covers the pixel centre; when loaded for one window,
    only that window's features are burnt.
    """

    table: pd.DataFrame
    polygon_ids: np.ndarray
    legend: tuple[ClassInfo, ...]
    target: Literal["label", "value"] = "label"

    @property
    def is_regression(self) -> bool:
        return self.target == "value"

    def present_ids(self) -> np.ndarray:
        """Ids of the features that cover at least one pixel, sorted."""
        return np.unique(self.polygon_ids[self.polygon_ids >= 0])

    @property
    def windowed(self) -> bool:
        return "window" in self.table.columns

    @property
    def feature_word(self) -> str:
        """What reports and logs call the reference's features: points, polygons, or features
        (both kinds)."""
        points = self.table["points"] if "points" in self.table.columns else pd.Series([False])
        if bool(points.all()):
            return "points"
        return "features" if bool(points.any()) else "polygons"


def window_name(start: date, end: date) -> str:
    """The name of a sample window in tables and unit keys."""
    return f"{start:%Y%m%d}-{end:%Y%m%d}"


def read_vector(path: str, layer: str | None, field: str) -> gpd.GeoDataFrame:
    """A GeoPackage, GeoParquet or Shapefile as a GeoDataFrame; errors name ``field``."""
    local = Path(path)
    if "://" not in path and not local.exists():
        raise InputDataError(
            f"file {path!r} does not exist",
            fix=f"point {field} to a GeoPackage, GeoParquet or Shapefile",
            field=field,
        )
    try:
        if local.suffix.lower() in (".parquet", ".geoparquet"):
            frame = gpd.read_parquet(path)
        else:
            frame = gpd.read_file(path, layer=layer)
    except Exception as exc:  # pyogrio/pyarrow raise many types; all mean "cannot read"
        raise InputDataError(
            f"file {path!r} cannot be read: {exc}",
            fix=f"check the file format and the layer name given next to {field}",
            field=field,
        ) from None
    if frame.crs is None:
        raise InputDataError(
            f"file {path!r} has no CRS",
            fix="assign the file a coordinate reference system (e.g. with ogr2ogr -a_srs)",
            field=field,
        )
    return frame


def require_fields(frame: gpd.GeoDataFrame, wanted: dict[str, str | None], prefix: str) -> None:
    """Raise naming the file's fields when a configured field (key -> name) is missing."""
    for key, name in wanted.items():
        if name is not None and name not in frame.columns:
            fields = ", ".join(str(c) for c in frame.columns if c != frame.geometry.name)
            raise InputDataError(
                f"the file has no field {name!r} (its fields: {fields})",
                fix=f"set {prefix}.{key} to one of its fields",
                field=f"{prefix}.{key}",
            )


def _check_geometries(frame: gpd.GeoDataFrame, path: str) -> gpd.GeoDataFrame:
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    kinds = frame.geom_type
    bad = kinds[~kinds.isin(_AREAL + _PUNCTUAL)]
    if len(bad):
        counts = bad.value_counts().to_dict()
        raise InputDataError(
            f"reference file {path!r} holds geometries that are neither polygons nor points "
            f"({counts}); lines and collections have no defined pixels",
            fix="keep only polygons or points (buffer lines into polygons if they are samples)",
            field="reference.path",
        )
    return frame


@lru_cache(maxsize=16)
def _announce(message: str) -> None:
    """An info line said once per process (every tile and window loads the reference)."""
    log.info(message)


def text_label_codes(labels: pd.Series) -> dict[str, int]:
    """Codes 1..K for text class labels, in sorted order of the names: the numbering
    ``sitsflow train`` gives a sample table's classes, so both agree."""
    return {name: code for code, name in enumerate(sorted(set(labels.astype(str))), start=1)}


def _labels(frame: pd.DataFrame, spec: ReferenceConfig) -> tuple[pd.Series, pd.Series | None]:
    """Integer class codes, and the text labels they stand for (None when the field holds codes).

    Integer codes are kept as they are; a field holding text gets codes 1..K in sorted order of
    the texts (``text_label_codes``), and the texts become the class names.
    """
    field = spec.label_field
    assert field is not None
    labels = frame[field]
    if labels.isna().any():
        raise InputDataError(
            f"{int(labels.isna().sum())} reference feature(s) have no value in {field!r}",
            fix="give every feature a label, or remove the unlabelled ones",
            field="reference.label_field",
        )
    numeric = pd.to_numeric(labels, errors="coerce")
    if numeric.isna().any():  # text labels
        if spec.ignore_labels:
            raise InputDataError(
                f"field {field!r} holds text labels (e.g. {labels[numeric.isna()].iloc[0]!r}) but "
                f"ignore_labels lists codes {list(spec.ignore_labels)}; text labels get their "
                "codes from their sorted names",
                fix="remove reference.ignore_labels; leave the unwanted features out of the file",
                field="reference.ignore_labels",
            )
        text = labels.astype(str)
        codes = text_label_codes(text)
        _announce(
            f"reference.label_field {field!r} holds text: class codes "
            f"{', '.join(f'{code}={name}' for name, code in codes.items())} (sorted names)"
        )
        return text.map(codes).astype(np.int64), text
    if not np.all(np.mod(numeric.to_numpy(dtype=float), 1) == 0):
        example = labels[np.mod(numeric, 1) != 0].tolist()[0]
        raise InputDataError(
            f"field {field!r} holds non-integer numbers (e.g. {example!r}); class labels must be "
            "integer codes or text",
            fix="use an integer class-code field or a text field as spec.reference.label_field "
            "(put names in spec.reference.name_field)",
            field="reference.label_field",
        )
    return numeric.astype(np.int64), None


def _values(frame: pd.DataFrame, spec: ReferenceConfig) -> pd.Series:
    field = spec.value_field
    assert field is not None
    values = pd.to_numeric(frame[field], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.fillna(0.0))
    if bad.any():
        example = frame[field][bad].iloc[0]
        raise InputDataError(
            f"{int(bad.sum())} reference feature(s) have no numeric value in {field!r} "
            f"(e.g. {example!r})",
            fix="give every feature a finite number, or remove those features",
            field="reference.value_field",
        )
    return values.astype(np.float64)


def _dates(frame: pd.DataFrame, name: str, key: str) -> pd.Series:
    """The field ``name`` as dates; an error names a feature whose value is not a date."""
    raw = frame[name]
    parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
    bad = parsed.isna()
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputDataError(
            f"{int(bad.sum())} reference feature(s) have no date in {name!r} (e.g. feature "
            f"{index}: {raw.iloc[index]!r})",
            fix=f"give every feature a date (YYYY-MM-DD) in {name!r}, or remove those features",
            field=f"reference.{key}",
        )
    return parsed.dt.date


def feature_windows(
    frame: pd.DataFrame, spec: ReferenceConfig, season: PeriodConfig
) -> pd.DataFrame:
    """Each feature's window (``window_start``, ``window_end``, ``window``): its own dates, or
    its start plus the length of ``season`` when there is no end field."""
    assert spec.start_field is not None
    starts = _dates(frame, spec.start_field, "start_field")
    if spec.end_field is not None:
        ends = _dates(frame, spec.end_field, "end_field")
    else:
        ends = starts + (season.end - season.start)
    empty = (ends <= starts).to_numpy()
    if empty.any():
        index = int(np.flatnonzero(empty)[0])
        raise InputDataError(
            f"{int(empty.sum())} reference feature(s) have a window that ends before it starts "
            f"(e.g. feature {index}: {starts.iloc[index]} .. {ends.iloc[index]})",
            fix=f"check the fields {spec.start_field!r} and {spec.end_field!r}",
            field="reference.end_field",
        )
    keys = [window_name(a, b) for a, b in zip(starts, ends, strict=True)]
    return pd.DataFrame(
        {"window": keys, "window_start": list(starts), "window_end": list(ends)},
        index=frame.index,
    )


def _fixed_split(frame: pd.DataFrame, spec: ReferenceConfig) -> np.ndarray:
    assert spec.split_field is not None
    raw = frame[spec.split_field]
    sides = raw.astype(str).str.strip().str.lower()
    bad = ~sides.isin(["train", "validation"]) | raw.isna()
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputDataError(
            f"{int(bad.sum())} reference feature(s) have a split value that is neither 'train' "
            f"nor 'validation' in {spec.split_field!r} (e.g. feature {index}: "
            f"{raw.iloc[index]!r})",
            fix=f"set {spec.split_field!r} to 'train' or 'validation' on every feature",
            field="reference.split_field",
        )
    return sides.to_numpy(dtype=object)


@lru_cache(maxsize=4)
def _read_once(path: str, layer: str | None, stamp: float) -> gpd.GeoDataFrame:
    """A reference file read once per version (tiles and windows each burn it again)."""
    return read_vector(path, layer, "reference.path")


def _read_reference(spec: ReferenceConfig) -> gpd.GeoDataFrame:
    local = Path(spec.path)
    if "://" in spec.path or not local.exists():
        return read_vector(spec.path, spec.layer, "reference.path")
    return _read_once(spec.path, spec.layer, local.stat().st_mtime).copy()


def reference_windows(spec: ReferenceConfig, season: PeriodConfig) -> list[tuple[date, date]]:
    """The distinct windows of the reference's features, sorted (empty without start_field)."""
    if spec.start_field is None:
        return []
    frame = _read_reference(spec)
    require_fields(
        frame, {"start_field": spec.start_field, "end_field": spec.end_field}, "reference"
    )
    windows = feature_windows(frame, spec, season)
    pairs = windows[["window_start", "window_end"]].drop_duplicates()
    return sorted((a, b) for a, b in pairs.itertuples(index=False))


@contextmanager
def _collection_paused() -> Iterator[None]:
    """The cyclic garbage collector off while millions of acyclic lists are built: each
    collection would walk every object the process holds (4x the time of the lists)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def geojson_mappings(geometries: np.ndarray) -> list[dict[str, Any]]:
    """GeoJSON-like mappings of shapely geometries, as rasterio's rasterize takes them.

    Polygons and multipolygons are built from one array of every coordinate (``tolist`` in C,
    then list slices) instead of shapely's ``__geo_interface__``, which makes a tuple per
    vertex in Python (8x slower on a reference of 20,000 parcels); other kinds take that path.
    The coordinates are the same floats either way.
    """
    kinds = shapely.get_type_id(geometries)
    areal = np.isin(kinds, (_POLYGON, _MULTIPOLYGON))
    out: list[dict[str, Any]] = [{}] * len(geometries)
    for i in np.flatnonzero(~areal).tolist():
        out[i] = geometries[i].__geo_interface__
    chosen = np.flatnonzero(areal)
    if not chosen.size:
        return out
    with _collection_paused():
        parts, part_of = shapely.get_parts(geometries[chosen], return_index=True)
        rings, ring_of = shapely.get_rings(parts, return_index=True)
        coordinates = shapely.get_coordinates(rings).tolist()
        ends = np.cumsum(shapely.get_num_coordinates(rings)).tolist()
        ring_lists = [coordinates[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        polygons: list[list[Any]] = []
        start = 0
        for n in np.bincount(ring_of, minlength=len(parts)).tolist():
            polygons.append(ring_lists[start : start + n])
            start += n
        start = 0
        counts = np.bincount(part_of, minlength=chosen.size).tolist()
        for i, n, kind in zip(chosen.tolist(), counts, kinds[chosen].tolist(), strict=True):
            if kind == _POLYGON:
                out[i] = {"type": "Polygon", "coordinates": polygons[start]}
            else:
                out[i] = {"type": "MultiPolygon", "coordinates": polygons[start : start + n]}
            start += n
    return out


def burn_features(
    frame: gpd.GeoDataFrame, ids: np.ndarray, grid: GridSpec
) -> tuple[np.ndarray, int]:
    """The id raster and the number of pixels left out because several features cover them."""
    if not len(frame):
        return np.full(grid.shape, -1, dtype=np.int32), 0
    # The GeoJSON mappings built once for both rasterizations (they were two fifths of the
    # planning time of a large reference).
    geometries = geojson_mappings(frame.geometry.to_numpy())
    shapes = list(zip(geometries, (int(i) for i in ids), strict=True))
    polygon_ids = rio_features.rasterize(
        shapes, out_shape=grid.shape, transform=grid.affine, fill=-1, dtype="int32"
    )
    cover = rio_features.rasterize(
        ((geom, 1) for geom in geometries),
        out_shape=grid.shape,
        transform=grid.affine,
        fill=0,
        dtype="int32",
        merge_alg=MergeAlg.add,
    )
    shared = cover > 1
    polygon_ids[shared] = -1
    return polygon_ids, int(shared.sum())


def load_reference(
    spec: ReferenceConfig,
    grid: GridSpec,
    *,
    season: PeriodConfig | None = None,
    window: str | None = None,
    burn: Burn | None = None,
) -> ReferencePolygons:
    """Read the reference file, check it, and burn its features onto ``grid``.

    With windows (``spec.start_field``; ``season`` is then the run's period), ``window`` picks
    the window whose features are burnt: the table still lists every feature. ``burn`` stands
    in for ``burn_features`` (the run engine passes one that keeps its rasters for a resume).
    """
    frame = _read_reference(spec)
    require_fields(
        frame,
        {
            "label_field": spec.label_field,
            "value_field": spec.value_field,
            "name_field": spec.name_field,
            "group_field": spec.group_field,
            "start_field": spec.start_field,
            "end_field": spec.end_field,
            "split_field": spec.split_field,
        },
        "reference",
    )
    frame = _check_geometries(frame, spec.path)
    regression = spec.value_field is not None
    if regression:
        target = _values(frame, spec)
    else:
        target, texts = _labels(frame, spec)
        unused = sorted(set(spec.ignore_labels) - set(target.tolist()))
        if unused:
            warnings.warn(
                f"spec.reference.ignore_labels lists {unused}, which no reference feature has; "
                "check the codes",
                DataQualityWarning,
                stacklevel=2,
            )
        keep = ~target.isin(spec.ignore_labels)
        frame, target = frame[keep], target[keep]
        if texts is not None:
            frame = frame.assign(**{_TEXT_LABEL: texts[keep]})
    frame = frame.to_crs(grid.crs).reset_index(drop=True)
    target = target.reset_index(drop=True)

    ids = np.arange(len(frame), dtype=np.int32)
    table = pd.DataFrame({"polygon_id": ids})
    if regression:
        table["value"] = target.to_numpy()
        table["name"] = ""
    else:
        table["label"] = target.to_numpy()
        names = frame[spec.name_field] if spec.name_field else frame.get(_TEXT_LABEL, target)
        table["name"] = names.astype(str).to_numpy()
    if spec.group_field:
        groups = frame[spec.group_field]
        # A feature without a group value is a group of its own.
        alone = "~" + table["polygon_id"].astype(str)
        table["group"] = np.where(groups.isna(), alone, groups.astype(str))
    else:
        table["group"] = table["polygon_id"].astype(str)
    table["points"] = frame.geom_type.isin(_PUNCTUAL).to_numpy()
    if spec.split_field:
        table["fixed_split"] = _fixed_split(frame, spec)
    burnt = np.ones(len(frame), dtype=bool)
    if spec.start_field:
        assert season is not None, "a reference with windows is loaded with the run's period"
        windows = feature_windows(frame, spec, season)
        for column in windows.columns:
            table[column] = windows[column].to_numpy()
        if window is not None:
            burnt = table["window"].to_numpy() == window

    polygon_ids, shared = (burn or burn_features)(frame[burnt], ids[burnt], grid)
    present = np.unique(polygon_ids[polygon_ids >= 0])
    if window is not None and present.size == 0:
        return ReferencePolygons(  # this window has no feature here: other windows may
            table=table,
            polygon_ids=polygon_ids,
            legend=() if regression else _legend(table),
            target="value" if regression else "label",
        )
    if present.size == 0:
        raise InputDataError(
            f"no reference feature of {spec.path!r} covers a pixel of the output grid "
            f"(grid bounds {tuple(round(v, 2) for v in grid.bounds)} in {grid.crs})",
            fix="check that the reference data and the imagery cover the same area",
            field="reference.path",
        )
    if shared:
        warnings.warn(
            f"{shared} pixel(s) are covered by more than one reference feature (overlapping "
            "polygons or several points in one pixel); their label is ambiguous, so they are "
            "not used",
            DataQualityWarning,
            stacklevel=2,
        )
    _warn_unused(table[burnt], present, regression, window)
    legend = () if regression else _legend(table)
    return ReferencePolygons(
        table=table,
        polygon_ids=polygon_ids,
        legend=legend,
        target="value" if regression else "label",
    )


def _warn_unused(
    table: pd.DataFrame, present: np.ndarray, regression: bool, window: str | None = None
) -> None:
    unused = table[~table["polygon_id"].isin(present)]
    if unused.empty:
        return
    lost = ""
    if not regression:
        gone = sorted(set(unused["label"]) - set(table.loc[present, "label"]))
        if gone:
            lost = (
                f"; class(es) {[int(c) for c in gone]} lose every feature, so they cannot be "
                "trained, mapped or validated"
            )
    of = "" if window is None else f" observed in {window}"
    warnings.warn(
        f"{len(unused)} of {len(table)} reference feature(s){of} cover no pixel centre of the grid "
        f"(outside the area, smaller than a pixel, or fully overlapped); they are not used{lost}",
        DataQualityWarning,
        stacklevel=3,
    )


def _legend(table: pd.DataFrame) -> tuple[ClassInfo, ...]:
    names = table.drop_duplicates("label").set_index("label")["name"].to_dict()
    return tuple(
        ClassInfo(int(code), str(names[code]) or str(code), PALETTE[i % len(PALETTE)])
        for i, code in enumerate(sorted(names))
    )


_CHECKED_FIELDS = (
    "label_field", "value_field", "name_field", "group_field", "start_field", "end_field",
    "split_field",
)  # fmt: skip


def check_reference(spec: ReferenceConfig, season: PeriodConfig | None = None) -> int:
    """What ``load_reference`` would refuse in the reference's attributes, read cheaply (the
    file's schema and the configured columns, no geometry): the file opens and has a CRS, every
    configured field exists, labels (codes or text), values, dates and splits are valid, and the
    geometries are polygons or points. ``sitsflow validate`` calls it. Returns the feature count.
    """
    import pyogrio

    wanted = {key: getattr(spec, key) for key in _CHECKED_FIELDS if getattr(spec, key)}
    if Path(spec.path).suffix.lower() in (".parquet", ".geoparquet"):
        whole = read_vector(spec.path, spec.layer, "reference.path")
        fields = [str(c) for c in whole.columns if c != whole.geometry.name]
        kinds = set(whole.geom_type.dropna())
        frame: pd.DataFrame | None = pd.DataFrame(whole.drop(columns=whole.geometry.name))
    else:
        if "://" not in spec.path and not Path(spec.path).exists():
            read_vector(spec.path, spec.layer, "reference.path")  # its error names the file
        try:
            info = pyogrio.read_info(spec.path, layer=spec.layer)
        except Exception:  # pyogrio raises many types: read_vector words the error
            read_vector(spec.path, spec.layer, "reference.path")
            raise
        if info.get("crs") is None:
            read_vector(spec.path, spec.layer, "reference.path")  # the no-CRS error
        frame = None
        fields = [str(f) for f in info["fields"]]
        kind = str(info.get("geometry_type") or "")
        kinds = (
            {kind.removesuffix(" Z").removesuffix(" M")} if kind and kind != "Unknown" else set()
        )
    for key, name in wanted.items():
        if name not in fields:
            raise InputDataError(
                f"the file has no field {name!r} (its fields: {', '.join(fields)})",
                fix=f"set reference.{key} to one of its fields",
                field=f"reference.{key}",
            )
    if frame is None:
        columns = sorted(set(wanted.values()))
        frame = pyogrio.read_dataframe(
            spec.path, layer=spec.layer, columns=columns, read_geometry=False
        )
    bad_kinds = sorted(kinds - set(_AREAL + _PUNCTUAL))
    if bad_kinds:
        raise InputDataError(
            f"reference file {spec.path!r} holds geometries that are neither polygons nor points "
            f"({', '.join(bad_kinds)}); lines and collections have no defined pixels",
            fix="keep only polygons or points (buffer lines into polygons if they are samples)",
            field="reference.path",
        )
    if spec.value_field is not None:
        _values(frame, spec)
    else:
        _labels(frame, spec)
    if spec.start_field is not None and season is not None:
        feature_windows(frame, spec, season)
    if spec.split_field is not None:
        _fixed_split(frame, spec)
    return len(frame)
