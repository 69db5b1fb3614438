"""Reference data: labelled polygons (or points) read once and burnt onto the output grid."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio import features as rio_features

from pipeline.errors import InputDataError
from pipeline.manifest import ReferenceSpec
from pipeline.model import ClassInfo, GridSpec
from pipeline.warnings import DataQualityWarning

# A qualitative palette for maps and reports (colour-blind friendly first, then more).
PALETTE = (
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
    "#1f78b4", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99", "#8dd3c7", "#bebada",
)  # fmt: skip


@dataclass(frozen=True)
class ReferencePolygons:
    """Reference features on the grid: one row per feature, and the raster of feature ids."""

    table: pd.DataFrame  # polygon_id, label (int), name
    polygon_ids: np.ndarray  # (height, width) int32; -1 where no reference feature
    legend: tuple[ClassInfo, ...]


def _read(spec: ReferenceSpec) -> gpd.GeoDataFrame:
    path = Path(spec.path)
    if "://" not in spec.path and not path.exists():
        raise InputDataError(
            f"reference file {spec.path!r} does not exist",
            fix="point spec.reference.path to a GeoPackage, GeoParquet or Shapefile",
            field="spec.reference.path",
        )
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            frame = gpd.read_parquet(spec.path)
        else:
            frame = gpd.read_file(spec.path, layer=spec.layer)
    except Exception as exc:  # pyogrio/pyarrow raise many types; all mean "cannot read"
        raise InputDataError(
            f"reference file {spec.path!r} cannot be read: {exc}",
            fix="check the file format and spec.reference.layer",
            field="spec.reference.path",
        ) from None
    return frame


def load_reference(spec: ReferenceSpec, grid: GridSpec) -> ReferencePolygons:
    frame = _read(spec)
    for key, name in (("label_field", spec.label_field), ("name_field", spec.name_field)):
        if name is not None and name not in frame.columns:
            fields = ", ".join(c for c in frame.columns if c != frame.geometry.name)
            raise InputDataError(
                f"reference file has no field {name!r} (its fields: {fields})",
                fix=f"set spec.reference.{key} to one of its fields",
                field=f"spec.reference.{key}",
            )
    labels = frame[spec.label_field]
    if labels.isna().any():
        raise InputDataError(
            f"{int(labels.isna().sum())} reference feature(s) have no value in "
            f"{spec.label_field!r}",
            fix="give every feature a label, or remove the unlabelled ones",
            field="spec.reference.label_field",
        )
    if not np.all(np.mod(labels.to_numpy(dtype=float), 1) == 0):
        raise InputDataError(
            f"field {spec.label_field!r} holds non-integer values (e.g. {labels.iloc[0]!r}); "
            "class codes must be integers",
            fix="use an integer class-code field as spec.reference.label_field",
            field="spec.reference.label_field",
        )
    if frame.crs is None:
        raise InputDataError(
            f"reference file {spec.path!r} has no CRS",
            fix="assign the file a coordinate reference system (e.g. with ogr2ogr -a_srs)",
            field="spec.reference.path",
        )
    frame = frame[~labels.isin(spec.ignore_labels)].to_crs(grid.crs)
    frame = frame[~frame.geometry.is_empty & frame.geometry.notna()].reset_index(drop=True)

    table = pd.DataFrame(
        {
            "polygon_id": np.arange(len(frame), dtype=np.int32),
            "label": frame[spec.label_field].astype(np.int64).to_numpy(),
            "name": (
                frame[spec.name_field].astype(str).to_numpy()
                if spec.name_field
                else frame[spec.label_field].astype(str).to_numpy()
            ),
        }
    )
    shapes = [
        (geom, int(pid))
        for geom, pid in zip(frame.geometry, table["polygon_id"], strict=True)
        if geom is not None
    ]
    polygon_ids = (
        rio_features.rasterize(
            shapes,
            out_shape=grid.shape,
            transform=grid.affine,
            fill=-1,
            dtype="int32",
            all_touched=False,
        )
        if shapes
        else np.full(grid.shape, -1, dtype=np.int32)
    )
    present = np.unique(polygon_ids[polygon_ids >= 0])
    if present.size == 0:
        raise InputDataError(
            f"no reference feature of {spec.path!r} covers a pixel of the output grid "
            f"(grid bounds {tuple(round(v, 2) for v in grid.bounds)} in {grid.crs})",
            fix="check that the reference data and the imagery cover the same area",
            field="spec.reference.path",
        )
    outside = len(table) - present.size
    if outside:
        warnings.warn(
            f"{outside} of {len(table)} reference feature(s) cover no pixel centre of the grid "
            "(outside the area, or smaller than a pixel); they are not used",
            DataQualityWarning,
            stacklevel=2,
        )
    names = table.drop_duplicates("label").set_index("label")["name"].to_dict()
    legend = tuple(
        ClassInfo(int(code), str(names[code]) or str(code), PALETTE[i % len(PALETTE)])
        for i, code in enumerate(sorted(names))
    )
    return ReferencePolygons(table=table, polygon_ids=polygon_ids, legend=legend)
