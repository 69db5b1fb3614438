"""postprocess: the map products after the mosaic (``postprocess`` section): per chunk of the
run's map, read with a halo from the mosaicked COGs (so a chunk at a tile seam sees the other
tile): regularization to a minimum mapping unit, uncertainty layers and the chunk's polygons;
then one unit that writes the COGs with their legends, stitches the polygons into GeoParquet /
GeoPackage, gives the mosaic's label and confidence maps their legend sidecars and adds the
products to the STAC collection.

With smoothing on, the smooth stage (between predict and mosaic) made the smoothed labels,
confidence and probabilities and the mosaic their COGs: this stage starts from those (the
regularized map, the uncertainty layers and the polygons' statistics are of the smoothed
maps); the shares of classes before post-processing are of the raw labels.

Chunks equal one whole-map pass exactly (``pipeline.postprocess``: the halo proofs), so the
products do not depend on the chunk size or on the tiles.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model import ClassInfo, GridSpec, Window
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit, window_key
from pipeline.stages.mosaic import PeriodMaps
from pipeline.stages.samples import Samples
from pipeline.storage import RunStore

NAME = "postprocess"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class Products:
    """What the stage writes (store-relative names) for the run's period."""

    labels: str | None
    """The regularized label map, if regularization is on."""
    final: str | None
    """The final label map: the regularized one, else the mosaic's smoothed one, else None."""
    layers: tuple[tuple[str, str], ...]
    """(uncertainty layer, COG)."""
    polygons: tuple[tuple[str, str], ...]
    """(format, file)."""
    chunks: str
    """Folder of the chunk units' results."""


def products_of(config: Any, folder: str, mosaic: dict[str, str]) -> Products:
    """The products of the section (``mosaic``: the mosaic's files by role)."""
    post = config.postprocess
    labels = None
    if post.regularization is not None:
        labels = f"{folder}/labels_regularized.tif"
    final = labels or mosaic.get("labels_smoothed")
    layers = tuple(
        (layer, f"{folder}/{layer}.tif")
        for layer in (post.uncertainty.layers if post.uncertainty else ())
    )
    polygons = tuple(
        (fmt, f"{folder}/polygons.{fmt}")
        for fmt in (post.vectorization.formats if post.vectorization else ())
    )
    return Products(labels, final, layers, polygons, f"{folder}/postprocess")


def sources(files: dict[str, str], smoothed: bool) -> tuple[str, str, tuple[str, ...]]:
    """The labels, confidence and probability COGs the products start from: the smoothed
    maps with smoothing on (the smooth stage), else the raw ones; probabilities in code order."""
    from pipeline.stages.mosaic import SMOOTHED_PROBABILITY

    prefix = SMOOTHED_PROBABILITY if smoothed else "probability_"
    suffix = "_smoothed" if smoothed else ""
    probability = sorted(
        (int(role.removeprefix(prefix)), name)
        for role, name in files.items()
        if role.startswith(prefix)
    )
    return (
        files[f"labels{suffix}"],
        files[f"confidence{suffix}"],
        tuple(name for _, name in probability),
    )


def run_legend(config: Any, legend: tuple[ClassInfo, ...]) -> tuple[ClassInfo, ...]:
    """The legend of the products: the manifest's colours, the default palette elsewhere."""
    from pipeline.postprocess.legend import legend as make_legend

    given = dict(config.postprocess.colors)
    return make_legend([(c.code, c.name, given.get(c.code)) for c in legend])


@dataclass(frozen=True)
class ChunkContext:
    root: str
    grid: GridSpec
    raw: str
    """The raw label map (its classes' shares in each polygon)."""
    labels: str
    """The label map the products start from (the smoothed one with smoothing on)."""
    confidence: str
    probabilities: tuple[str, ...]
    """The probability COGs, in class-code order."""
    codes: tuple[int, ...]
    """Every class code the label map may hold (the model's classes)."""
    nodata: int
    postprocess: Any
    folder: str


def _reader(dataset: Any) -> Callable[[Window], np.ndarray]:
    from rasterio.windows import Window as RioWindow

    def read(window: Window) -> np.ndarray:
        return np.asarray(
            dataset.read(
                1, window=RioWindow(window.col_off, window.row_off, window.width, window.height)
            )
        )

    return read


def chunk_unit(context: ChunkContext, window: Window) -> dict[str, Any]:
    """One chunk's products (read with the halo they need), saved for the products unit."""
    import rasterio

    from pipeline.postprocess import uncertainty
    from pipeline.postprocess.regularize import regularize_window
    from pipeline.postprocess.smooth import percent_to_probability
    from pipeline.postprocess.vectorize import polygonize_chunk

    post, grid = context.postprocess, context.grid
    shape = (grid.height, grid.width)
    codes = np.asarray(context.codes)
    store = RunStore(context.root)
    with contextlib.ExitStack() as stack:

        def opened(name: str) -> Any:
            return stack.enter_context(rasterio.open(stack.enter_context(store.fetch(name))))

        read_labels = _reader(opened(context.labels))
        raw = _reader(opened(context.raw))(window)
        confidence = _reader(opened(context.confidence))(window)
        layers = [_reader(opened(name))(window) for name in context.probabilities]
        probabilities = percent_to_probability(np.stack(layers)) if layers else None
        labels = read_labels(window)
        if post.regularization is not None:
            settings = post.regularization.on_grid(grid.resolution)
            labels = regularize_window(read_labels, shape, window, settings, context.nodata, codes)
        arrays: dict[str, np.ndarray] = {"labels": labels, "confidence": confidence}
        for layer in post.uncertainty.layers if post.uncertainty else ():
            assert probabilities is not None  # the manifest asks for outputs.probabilities
            arrays[layer] = uncertainty.to_percent(getattr(uncertainty, layer)(probabilities))
    key = window_key(window)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    store.write_bytes(f"{context.folder}/{key}.npz", buffer.getvalue())
    regions = 0
    if post.vectorization is not None:
        percent = None
        if probabilities is not None:
            percent = np.stack([uncertainty.to_percent(p) for p in probabilities])
        polygons = polygonize_chunk(
            labels,
            window,
            grid,
            codes,
            context.nodata,
            connectivity=post.connectivity,
            confidence=confidence,
            raw=raw,
            raw_codes=codes,
            probabilities=percent,
        )
        regions = len(polygons.complete.code) + len(polygons.pending.code)
        store.write_bytes(f"{context.folder}/{key}.polygons.pkl", pickle.dumps(polygons))
    return {"regions": int(regions)}


@dataclass(frozen=True)
class ProductsContext:
    root: str
    grid: GridSpec
    windows: tuple[Window, ...]
    products: Products
    legend: tuple[ClassInfo, ...]
    raw: tuple[tuple[str, str], ...]
    """(role, COG) of the mosaic's label and confidence maps (raw and smoothed), given legend
    sidecars; the first is the raw label map."""
    nodata: int
    dtype: str
    codes: tuple[int, ...]
    probability_codes: tuple[int, ...]
    connectivity: int
    run_name: str
    period: tuple[Any, Any]
    catalog: str
    mosaic_files: tuple[tuple[str, str], ...]
    """(role, COG) of every mosaic map, for the STAC collection."""
    samples: str = ""
    """The samples table: its validation pixels score the raw and the final map side by side
    (empty: a tiled run, whose pixels are on their tiles' grids; not scored)."""
    simplify: float | None = None
    """Tolerance of the polygons' coverage simplification (None: as traced)."""


def _publish_cog(
    store: RunStore,
    context: ProductsContext,
    name: str,
    array: str,
    info: Any,
    *,
    nodata: float,
    dtype: str,
    resampling: str,
) -> None:
    from pipeline.postprocess.legend import apply_band_info
    from pipeline.postprocess.products import sidecar_xml
    from pipeline.predict.outputs import write_cog

    def fill(window: Window) -> np.ndarray:
        with np.load(
            io.BytesIO(store.read_bytes(f"{context.products.chunks}/{window_key(window)}.npz"))
        ) as saved:
            return np.asarray(saved[array])

    with store.publish(name) as target:
        write_cog(
            target,
            context.grid,
            dtype,
            fill,
            context.windows,
            nodata=nodata,
            overview_resampling=resampling,
            describe=lambda dataset: apply_band_info(dataset, info),
        )
    store.write_text(f"{name}.aux.xml", sidecar_xml(info, color_table=False))


def products_unit(context: ProductsContext, _payload: Any) -> dict[str, Any]:
    """The COGs with their legends, the polygons, the raw maps' sidecars and STAC items."""
    from pipeline.postprocess.legend import band_infos
    from pipeline.postprocess.products import sidecar_xml

    store = RunStore(context.root)
    infos = band_infos(context.legend)
    products = context.products
    written: list[tuple[str, str]] = []
    if products.labels is not None:
        info = infos["labels"]
        _publish_cog(store, context, products.labels, "labels", info, nodata=context.nodata,
                     dtype=context.dtype, resampling="mode")  # fmt: skip
        written.append(("labels_postprocessed", products.labels))
    for layer, name in products.layers:
        _publish_cog(store, context, name, layer, infos[layer], nodata=255, dtype="uint8",
                     resampling="average")  # fmt: skip
        written.append((layer, name))
    # The mosaic's maps keep their bytes: their legend goes to GDAL's sidecar, colours included.
    for role, name in context.raw:
        store.write_text(f"{name}.aux.xml", sidecar_xml(infos[role], color_table=role == "labels"))
    polygons = 0
    if products.polygons:
        polygons = _write_polygons(store, context)
    _catalog(store, context, written)
    scores = _compare(store, context) if products.final and context.samples else None
    return {
        "files": [n for _, n in written],
        "polygons": polygons,
        "overall_accuracy": None
        if scores is None
        else {k: scores[k]["overall_accuracy"] for k in ("raw", "postprocessed")},
    }


def _compare(store: RunStore, context: ProductsContext) -> dict[str, Any]:
    """The raw and the final map scored on the same validation pixels (postprocess/comparison.*)."""
    import json

    import pandas as pd
    import rasterio

    from pipeline.postprocess.compare import comparison_html, side_by_side
    from pipeline.samples.split import VALIDATION

    with store.fetch(context.samples) as local:
        samples = pd.read_parquet(local, columns=["split", "row", "col", "label"])
    validation = samples[samples["split"] == VALIDATION]
    rows, cols = validation["row"].to_numpy(), validation["col"].to_numpy()
    read = {}
    for role, name in (("raw", context.raw[0][1]), ("final", context.products.final)):
        assert name is not None
        with store.fetch(name) as path, rasterio.open(path) as src:
            read[role] = src.read(1)[rows, cols]
    scores = side_by_side(
        validation["label"].to_numpy(), read["raw"], read["final"], context.nodata, context.codes
    )
    folder = context.products.chunks  # not the report folder: validate publishes it whole
    store.write_text(f"{folder}/comparison.json", json.dumps(scores, indent=2) + "\n")
    title = f"{context.run_name}: the raw and the post-processed map, side by side"
    page = comparison_html(scores, context.legend, title)
    store.write_text(f"{folder}/comparison.html", page)
    return scores


def _write_polygons(store: RunStore, context: ProductsContext) -> int:
    """The polygons, stitched one row of chunks at a time (``postprocess.stream``): memory is a
    band of chunks and the regions that cross its bottom, not the map's polygons."""
    from pipeline.postprocess.stream import Columns, write_streamed

    rows = sorted({w.row_off for w in context.windows})

    def band(row: int) -> Callable[[], list[Any]]:
        def load() -> list[Any]:
            folder = context.products.chunks
            return [
                pickle.loads(store.read_bytes(f"{folder}/{window_key(w)}.polygons.pkl"))
                for w in context.windows
                if w.row_off == row
            ]

        return load

    columns = Columns(
        {c.code: c.name for c in context.legend}, context.codes, context.probability_codes
    )
    formats = dict(context.products.polygons)
    with contextlib.ExitStack() as stack:
        targets = {fmt: stack.enter_context(store.publish(name)) for fmt, name in formats.items()}
        return write_streamed(
            [band(r) for r in rows],
            context.grid,
            context.connectivity,
            columns,
            parquet=targets.get("parquet"),
            gpkg=targets.get("gpkg"),
            simplify=context.simplify,
        )


def _catalog(store: RunStore, context: ProductsContext, written: list[tuple[str, str]]) -> None:
    """The run's STAC collection again, with an item per product COG beside the mosaic's."""
    from pipeline.predict.stac import describe_cog, output_item, write_run_catalog
    from pipeline.validate.mapped_area import count_map_classes

    outputs, counts = [], {}
    with contextlib.ExitStack() as stack:
        for role, name in (*context.mosaic_files, *written):
            local = stack.enter_context(store.fetch(name))
            outputs.append(describe_cog(local, role=role, href=name))
            if role.startswith("labels"):
                counts[role] = count_map_classes(local).pixels
    items = [
        output_item(
            output,
            run_name=context.run_name,
            period=context.period,
            legend=context.legend if output.role.startswith("labels") else (),
            others=[o for o in outputs if o is not output],
            class_counts=counts.get(output.role),
        )
        for output in outputs
    ]
    write_run_catalog(store, context.catalog, items, run_name=context.run_name)


class Postprocess:
    name = NAME
    version = VERSION
    needs = ("samples", "mosaic")
    # What its units import on a worker, loaded by the cluster warm-up.
    worker_imports = (
        "pipeline.postprocess.regularize",
        "pipeline.postprocess.smooth",  # percent_to_probability
        "pipeline.postprocess.vectorize",
    )

    def plan(self, context: PlanContext) -> StagePlan:
        config = context.config
        if config.postprocess is None or config.task != "classification":
            return StagePlan(NAME)
        maps: tuple[PeriodMaps, ...] = context.outputs("mosaic")
        samples: Samples = context.outputs("samples")
        main = maps[0]  # the run's period (further periods: raw maps only, for now)
        grid = main.tiles.grid
        folder = Path(main.layout.labels_name).parent.as_posix()
        post = config.postprocess
        products = products_of(
            config, folder, {u.payload.role: u.payload.name for u in main.map_units}
        )
        mosaic = {u.payload.role: u.digest for u in main.map_units}
        windows = grid.chunks(config.compute.chunk_size)
        chunked = any(
            p is not None for p in (post.regularization, post.vectorization, post.uncertainty)
        )
        chunk_units = [
            Unit(
                NAME,
                f"chunk-{window_key(w)}",
                digest(mosaic, config.postprocess, grid, w),
                payload=w,
                pixels=w.n_pixels,
            )
            for w in windows
            if chunked
        ]
        legend = run_legend(config, samples.reference.legend)
        final = Unit(
            NAME,
            "products",
            digest(
                [u.digest for u in chunk_units],
                main.catalog.digest,
                context.input("samples").digest,
                legend,
                products,
            ),
            payload=None,
        )
        files: dict[str, Any] = {}
        if products.labels is not None:
            files["labels_postprocessed"] = products.labels
        files.update(dict(products.layers))
        if products.polygons:
            files["polygons"] = [name for _, name in products.polygons]
        if products.final is not None:
            files["comparison"] = f"{products.chunks}/comparison.html"
        return StagePlan(
            NAME,
            [*chunk_units, final],
            outputs=(main, products, tuple(windows), legend),
            files=files,
        )

    def run(self, context: RunContext) -> None:
        plan = context.stage_plan(NAME)
        if not plan.units:
            return
        config, root = context.config, context.store.root
        main, products, windows, legend = plan.outputs
        predictions = context.stage_plan("predict").outputs
        encoding = context.results["predict"]["encoding"]
        codes = tuple(int(c) for c in context.results["train"]["classes"])
        files = {u.payload.role: u.payload.name for u in main.map_units}
        post = config.postprocess
        assert post is not None  # planned units: the section is there
        smoothed = post.smoothing is not None
        labels, confidence, probability = sources(files, smoothed)
        grid = main.tiles.grid
        tiled = context.stage_plan("cube").outputs.tiled
        nodata, dtype = int(encoding.nodata), str(encoding.dtype)
        context.run(
            StageWork(
                NAME,
                [u for u in plan.units if u.key != "products"],
                chunk_unit,
                ChunkContext(
                    root,
                    grid,
                    files["labels"],
                    labels,
                    confidence,
                    probability,
                    codes,
                    nodata,
                    postprocess=post,
                    folder=products.chunks,
                ),
                description="post-processed chunks",
            )
        )
        period = main.tiles.period
        context.run(
            StageWork(
                NAME,
                [u for u in plan.units if u.key == "products"],
                products_unit,
                ProductsContext(
                    root,
                    grid,
                    windows,
                    products,
                    legend,
                    (
                        ("labels", files["labels"]),
                        ("confidence", files["confidence"]),
                        *((("labels", labels), ("confidence", confidence)) if smoothed else ()),
                    ),
                    codes=codes,
                    probability_codes=tuple(predictions.probability_classes),
                    connectivity=post.connectivity,
                    simplify=None if post.vectorization is None else post.vectorization.simplify,
                    run_name=config.name,
                    period=(period.start, period.end),
                    catalog=main.layout.catalog_name,
                    mosaic_files=tuple(files.items()),
                    samples="" if tiled else context.layout.relative(context.layout.samples),
                    nodata=nodata,
                    dtype=dtype,
                ),
                on_cluster=False,
                description="map products",
            )
        )


STAGE = Postprocess()
