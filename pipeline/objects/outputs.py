"""What object mode makes from the zonal sums, on the driver and chunk by chunk: the segment table
and its model (``model_unit``), the label raster and the polygons (``maps_unit``), and the
accuracy report (``report_unit``).

Memory: the zonal parts are read one chunk at a time (``pipeline.objects.table``); the driver
holds the segment index (24 bytes per segment), the id -> label lookup of the maps (17 bytes per
segment), the training segments, and the segments open across the chunk being read (with
percentiles asked: their pixels' values too, and one chunk's). The table
is written as one Parquet part per chunk (the segments complete there) and merged into
``objects/segments.parquet`` part by part; the polygons are appended to the GeoPackage chunk by
chunk, each segment once, whole.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import InputDataError
from pipeline.model import GridSpec, Window
from pipeline.objects.mosaic import TileCube

FOLDER = "objects"
LABELS = f"{FOLDER}/labels.tif"
SEGMENTS = f"{FOLDER}/segments.tif"
POLYGONS = f"{FOLDER}/segments.gpkg"
TABLE = f"{FOLDER}/segments.parquet"
REPORT = f"{FOLDER}/report.json"
MAP_STORE = f"{FOLDER}/map.zarr"
IDS_STORE = f"{FOLDER}/ids.zarr"
IDS_PART = f"{FOLDER}/parts/ids.npz"
INDEX_PART = f"{FOLDER}/parts/index.npz"


def _key(window: Window) -> str:
    return f"r{window.row_off:06d}-c{window.col_off:06d}"


def segments_part(window: Window) -> str:
    return f"{FOLDER}/parts/segments-{_key(window)}.npz"


def zonal_part(window: Window) -> str:
    return f"{FOLDER}/parts/zonal-{_key(window)}.npz"


def table_part(window: Window) -> str:
    return f"{FOLDER}/parts/table-{_key(window)}.parquet"


@dataclass(frozen=True)
class ObjectsContext:
    root: str
    tiles: tuple[TileCube, ...]
    features: tuple[tuple[str, str], ...]
    n_features: int
    feature_names: tuple[str, ...]
    segment_variables: tuple[tuple[str, str], ...]
    n_segment_features: int
    grid: GridSpec
    """The mosaic's grid (the only tile's in a single-grid run): segments live on it."""
    windows: tuple[Window, ...]
    """Its chunks, row-major: the order every chunk-by-chunk pass reads them in."""
    kind: str
    settings: Any
    model: Any
    seed: int
    samples: str
    pixel_labels: str
    offsets: tuple[tuple[str | None, tuple[int, int]], ...]
    """Per tile key (the samples' ``tile`` column), its top-left pixel in the mosaic."""


def load_part(root: str, name: str, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of a saved part (only ``keys`` when given: an npz member is read on demand)."""
    from pipeline.storage import RunStore

    with RunStore(root).fetch(name) as local, np.load(local) as data:
        return {k: data[k] for k in (keys or tuple(data.files))}


def _zonal(context: ObjectsContext, window: Window, keys: tuple[str, ...]) -> dict[str, Any]:
    """Members of a chunk's zonal part (``present``, the ids in its raster, is computed from
    the raster for a part of an earlier version)."""
    from pipeline.storage import RunStore

    out: dict[str, Any] = {}
    with RunStore(context.root).fetch(zonal_part(window)) as local, np.load(local) as data:
        for key in keys:
            if key == "present" and key not in data.files:
                core = data["core"]
                out[key] = np.unique(core[core > 0])
            else:
                out[key] = data[key]
    return out


def _sums(data: dict[str, Any]) -> Any:
    from pipeline.objects.zonal import ZonalSums

    return ZonalSums(data["ids"], data["count"], data["sums"], data["squares"])


def _values(data: dict[str, Any]) -> Any:
    from pipeline.objects.zonal import ZonalValues

    return ZonalValues(data["ids"], data["count"], data["values"])


def _samples(context: ObjectsContext, columns: list[str]) -> Any:
    """The columns of the samples table that object mode reads (a tiled run's ``tile`` too)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline.storage import RunStore

    with RunStore(context.root).fetch(context.samples) as local:
        names = pq.read_schema(local).names
        return pd.read_parquet(local, columns=[c for c in [*columns, "tile"] if c in names])


def _mosaic_rows(context: ObjectsContext, samples: Any) -> tuple[np.ndarray, np.ndarray]:
    """The samples' pixels on the mosaic's grid (a tiled run's are on their tile's)."""
    rows = samples["row"].to_numpy().astype(np.int64)
    cols = samples["col"].to_numpy().astype(np.int64)
    if "tile" in samples.columns and len(context.offsets) > 1:
        tiles = samples["tile"].to_numpy()
        for key, (row, col) in context.offsets:
            here = tiles == key
            rows[here] += row
            cols[here] += col
    return rows, cols


def _sample_segments(context: ObjectsContext, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.zeros(len(rows), dtype=np.int64)
    for window in context.windows:
        r0, c0 = window.row_off, window.col_off
        inside = (
            (rows >= r0) & (rows < r0 + window.height) & (cols >= c0) & (cols < c0 + window.width)
        )
        if inside.any():
            core = _zonal(context, window, ("core",))["core"]
            out[inside] = core[rows[inside] - r0, cols[inside] - c0]
    return out


def _table_schema(names: list[str], predicted: bool) -> Any:
    import pyarrow as pa

    fields = [pa.field("segment", pa.int64()), pa.field("pixels", pa.int64())]
    fields += [pa.field(n, pa.float32()) for n in names]
    fields += [
        pa.field("label", pa.float64()),
        pa.field("polygon_id", pa.float64()),
        pa.field("split", pa.string()),
    ]
    if predicted:
        fields += [pa.field("predicted", pa.int64()), pa.field("confidence", pa.int64())]
    return pa.schema(fields)


def _write_part(context: ObjectsContext, window: Window, frame: Any, schema: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.storage import RunStore

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), buffer)
    with RunStore(context.root).publish(table_part(window)) as target:
        target.write_bytes(buffer.getvalue())


def _read_part(context: ObjectsContext, window: Window) -> Any:
    import pandas as pd

    from pipeline.storage import RunStore

    with RunStore(context.root).fetch(table_part(window)) as local:
        return pd.read_parquet(local)


def model_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    """The segments' statistics streamed into one table part per chunk, the reference assigned,
    the model fitted on the training segments, and every part labelled and merged."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.learn import train_model
    from pipeline.objects.build import assign, feature_names
    from pipeline.objects.table import complete_sums, complete_values, segment_index
    from pipeline.objects.zonal import ZonalValues, percentile_of, percentiles, statistics
    from pipeline.samples.split import TRAIN
    from pipeline.storage import RunStore

    store = RunStore(context.root)
    windows = context.windows
    samples = _samples(context, ["row", "col", "polygon_id", "label", "split"])
    rows, cols = _mosaic_rows(context, samples)
    sample_ids = _sample_segments(context, rows, cols)
    keys = ("present", "ids", "count")
    index = segment_index(
        (i, *(_zonal(context, w, keys)[k] for k in keys)) for i, w in enumerate(windows)
    )
    _save_index(context, index)
    sizes = pd.Series(index.size, index=index.ids)
    chosen = assign(sample_ids, samples, sizes, context.settings.min_overlap)
    chosen = chosen.astype({"label": np.float64, "polygon_id": np.float64})
    statistics_ = list(context.settings.statistics)
    names = feature_names(context.feature_names, statistics_)
    bare = _table_schema(names, predicted=False)
    sums = (_sums(_zonal(context, w, ("ids", "count", "sums", "squares"))) for w in windows)
    asked = {s: q for s in statistics_ if (q := percentile_of(s)) is not None}
    pixels: Iterable[ZonalValues | None] = [None] * len(windows)  # no percentiles: not read
    if asked:
        pixels = complete_values(
            (_values(_zonal(context, w, ("ids", "count", "values"))) for w in windows), index
        )
    training = []
    for window, done, held in zip(windows, complete_sums(sums, index), pixels, strict=True):
        mean, std = statistics(done)
        values = {"mean": mean, "std": std}
        if held is not None:
            assert np.array_equal(held.ids, done.ids), "sums and pixels of other segments"
            values.update(zip(asked, percentiles(held, list(asked.values())), strict=True))
        features = np.concatenate([values[s] for s in statistics_], axis=1).astype(np.float32)
        part = pd.DataFrame(features, columns=names)
        part.insert(0, "pixels", done.count)
        part.insert(0, "segment", done.ids)
        part = part.merge(chosen, on="segment", how="left")
        _write_part(context, window, part, bare)
        complete = ~part[names].isna().any(axis=1)
        training.append(part[(part["split"] == TRAIN) & complete])
    train = pd.concat(training).sort_values("segment", kind="stable") if training else None
    if train is None or train["label"].nunique() < 2:
        found = 0 if train is None else len(train)
        classes = 0 if train is None else train["label"].nunique()
        raise InputDataError(
            f"{found} training segment(s) of {classes} class(es): too few to fit a model",
            fix="make the segments smaller (objects.segmentation.size) than the reference "
            "polygons, or lower objects.min_overlap",
            field="objects",
        )
    model, contract = train_model(
        context.model,
        train[names].to_numpy(np.float32),
        train["label"].to_numpy().astype(np.int64),
        names,
        context.seed,
        groups=train["polygon_id"].to_numpy().astype(np.int64),
    )
    schema = _table_schema(names, predicted=True)
    count = 0
    with store.publish(TABLE) as target, pq.ParquetWriter(target, schema) as writer:
        for window in windows:
            part = _labelled(model, _read_part(context, window), names)
            _write_part(context, window, part, schema)
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
            count += len(part)
    return {
        "segments": count,
        "training_segments": len(train),
        "classes": [int(c) for c in contract.classes],
    }


def _labelled(model: Any, part: Any, names: list[str]) -> Any:
    from pipeline.learn.learner import predict_rows

    part["predicted"] = 0
    part["confidence"] = 255
    complete = ~part[names].isna().any(axis=1)
    if len(part):
        found = predict_rows(
            model, part[names].to_numpy(np.float32), "classification", complete.to_numpy()
        )
        if found.probabilities is not None and found.classes is not None:
            best = found.probabilities.argmax(axis=1)
            part.loc[complete, "predicted"] = found.classes[best]
            part.loc[complete, "confidence"] = np.round(
                found.probabilities.max(axis=1) * 100
            ).astype(int)
    return part


def _save_index(context: ObjectsContext, index: Any) -> None:
    from pipeline.storage import RunStore

    buffer = io.BytesIO()
    np.savez(buffer, ids=index.ids, size=index.size, last=index.last)
    with RunStore(context.root).publish(INDEX_PART) as target:
        target.write_bytes(buffer.getvalue())


def maps_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    """The label, confidence and id rasters chunk by chunk, then their COGs; the polygons
    appended to the GeoPackage as their segments complete, with the table's columns."""
    import pandas as pd
    import zarr

    from pipeline.objects.table import SegmentIndex
    from pipeline.predict.blockwise import (
        CONFIDENCE_NODATA,
        CONFIDENCE_VARIABLE,
        LABEL_VARIABLE,
        MapEncoding,
        create_map_store,
    )
    from pipeline.predict.outputs import tiles_to_cog
    from pipeline.storage import RunStore

    store = RunStore(context.root)
    with store.fetch(TABLE) as local:
        lookup = pd.read_parquet(local, columns=["segment", "predicted", "confidence"])
    lookup = lookup.sort_values("segment")
    ids = lookup["segment"].to_numpy()
    labels = lookup["predicted"].to_numpy()
    confidence = lookup["confidence"].to_numpy()
    del lookup
    index = SegmentIndex(**load_part(context.root, INDEX_PART))
    classes = tuple(sorted(int(c) for c in np.unique(labels) if c != 0)) or (1,)
    encoding = MapEncoding.for_classes(classes)
    url = store.url(MAP_STORE)
    store.remove(MAP_STORE)
    chunk = max(w.height for w in context.windows)
    create_map_store(url, context.grid, chunk, encoding)
    group = zarr.open_group(url, mode="r+")
    ids_url = store.url(IDS_STORE)
    store.remove(IDS_STORE)
    zarr.open_group(ids_url, mode="w").create_array(
        "segment",
        shape=(context.grid.height, context.grid.width),
        chunks=(chunk, chunk),
        dtype="int64",
        fill_value=0,
    )
    segment_array = zarr.open_group(ids_url, mode="r+")["segment"]

    def pieces() -> Iterator[list[tuple[int, Any]]]:
        from pipeline.objects.build import polygons_of

        for window in context.windows:
            core = _zonal(context, window, ("core",))["core"]
            at = np.clip(np.searchsorted(ids, core), 0, max(len(ids) - 1, 0))
            found = (core > 0) & (ids[at] == core) if len(ids) else np.zeros(core.shape, bool)
            rows, cols = window.slices
            mapped = found & (labels[at] > 0) if len(ids) else found
            out = np.where(mapped, labels[at] if len(ids) else 0, encoding.nodata)
            group[LABEL_VARIABLE][rows, cols] = out.astype(encoding.dtype)  # type: ignore[index]
            group[CONFIDENCE_VARIABLE][rows, cols] = np.where(  # type: ignore[index]
                mapped, confidence[at] if len(ids) else 0, CONFIDENCE_NODATA
            ).astype(np.uint8)
            segment_array[rows, cols] = core  # type: ignore[index]
            yield polygons_of(core, context.grid, window)

    written = _write_polygons(context, pieces(), index)
    for name, variable, nodata, resampling in (
        (LABELS, LABEL_VARIABLE, float(encoding.nodata), "mode"),
        (SEGMENTS, "segment", 0.0, "nearest"),
    ):
        source = ids_url if variable == "segment" else url
        with store.publish(name) as target:
            tiles_to_cog(
                ((source, context.grid),),
                variable,
                context.grid,
                target,
                nodata=nodata,
                overview_resampling=resampling,
            )
    return {"segments": written}


def _write_polygons(
    context: ObjectsContext, chunks: Iterator[list[tuple[int, Any]]], index: Any
) -> int:
    """Append each segment's polygon, once complete, with its table row (the part of the chunk
    it completes in) to objects/segments.gpkg; the number of polygons written."""
    import geopandas as gpd

    from pipeline.objects.table import complete_pieces
    from pipeline.storage import RunStore

    written = 0
    with RunStore(context.root).publish(POLYGONS) as target:
        for window, done in zip(context.windows, complete_pieces(chunks, index), strict=True):
            part = _read_part(context, window).drop(columns=["polygon_id"])
            frame = gpd.GeoDataFrame(
                {"segment": np.asarray([d[0] for d in done], dtype=np.int64)},
                geometry=[d[1] for d in done],
                crs=context.grid.crs,
            ).merge(part, on="segment", how="left")
            keep = ["segment", "pixels", "label", "split", "predicted", "confidence"]
            frame = frame[["segment", "geometry", *keep[1:]] + [
                c for c in part.columns if c not in keep
            ]]  # fmt: skip
            if frame.empty:
                continue
            frame.to_file(  # one geometry type for every batch: a segment can be in pieces
                target,
                driver="GPKG",
                layer="segments",
                mode="a" if written else "w",
                promote_to_multi=True,
            )
            written += len(frame)
        if not written:
            frame.to_file(target, driver="GPKG", layer="segments", promote_to_multi=True)
    return written


def values_at(path: Any, rows: np.ndarray, cols: np.ndarray, block: int = 1024) -> np.ndarray:
    """A raster's first band at pixels, read block by block where there are pixels (never the
    whole raster)."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    with rasterio.open(path) as src:
        out = np.zeros(len(rows), dtype=np.dtype(src.dtypes[0]))
        cells = (rows // block) * (-(-src.width // block)) + cols // block
        for cell in np.unique(cells).tolist():
            here = cells == cell
            r0 = int(rows[here].min())
            c0 = int(cols[here].min())
            height = int(rows[here].max()) - r0 + 1
            width = int(cols[here].max()) - c0 + 1
            data = src.read(1, window=RioWindow(c0, r0, width, height))
            out[here] = data[rows[here] - r0, cols[here] - c0]
    return out


def report_unit(context: ObjectsContext, _payload: Any) -> dict[str, Any]:
    import pandas as pd
    import rasterio

    from pipeline.samples.split import VALIDATION
    from pipeline.storage import RunStore
    from pipeline.validate.metrics import classification_metrics

    store = RunStore(context.root)
    with store.fetch(TABLE) as local:
        table = pd.read_parquet(local, columns=["split", "label", "predicted"])
    samples = _samples(context, ["row", "col", "label", "split"])
    validation = samples[samples["split"] == VALIDATION]
    rows, cols = _mosaic_rows(context, validation)
    with store.fetch(LABELS) as path:
        objects = values_at(path, rows, cols)
        with rasterio.open(path) as src:
            object_nodata = src.nodata
    with store.fetch(context.pixel_labels) as path:
        pixels = values_at(path, rows, cols)
        with rasterio.open(path) as src:
            pixel_nodata = src.nodata
    both = (objects != object_nodata) & (pixels != pixel_nodata)
    reference = validation["label"].to_numpy()[both]
    per_pixel = {
        "objects": classification_metrics(reference, objects[both].astype(np.int64)),
        "pixels": classification_metrics(reference, pixels[both].astype(np.int64)),
    }
    segments = table[(table["split"] == VALIDATION) & (table["predicted"] > 0)]
    per_segment = classification_metrics(
        segments["label"].to_numpy().astype(np.int64),
        segments["predicted"].to_numpy().astype(np.int64),
    )
    document = {
        "segmentation": context.kind,
        "segments": len(table),
        "per_pixel": {
            "validation_pixels": int(both.sum()),
            **{
                k: {
                    "overall_accuracy": m.overall_accuracy,
                    "kappa": m.kappa,
                    "macro_f1": m.macro_f1,
                }
                for k, m in per_pixel.items()
            },
        },
        "per_segment": {"segments": len(segments), **per_segment.to_dict()},
    }
    with store.publish(REPORT) as target:
        target.write_text(json.dumps(document, indent=2, default=float), encoding="utf-8")
    return {
        "object_overall_accuracy": per_pixel["objects"].overall_accuracy,
        "pixel_overall_accuracy": per_pixel["pixels"].overall_accuracy,
        "validation_pixels": int(both.sum()),
        "validation_segments": len(segments),
    }
