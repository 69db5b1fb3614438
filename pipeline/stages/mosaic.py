"""mosaic: the map stores of every tile -> one COG per map file (streamed window by window, with
overviews), per mapped period; then a STAC catalog of the period's maps. With smoothing
(``postprocess.smoothing``), the run's period also gets the smoothed maps from the tiles'
smoothed stores (``pipeline.stages.smooth``): ``labels_smoothed.tif``,
``confidence_smoothed.tif`` and ``probability_<code>_smoothed.tif``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.model import ClassInfo, GridSpec
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.layout import RunLayout
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit
from pipeline.stages.cube import Cubes, PeriodTiles
from pipeline.stages.predict import Predictions
from pipeline.stages.samples import Samples
from pipeline.stages.smooth import Smoothed
from pipeline.storage import RunStore

NAME = "mosaic"
VERSION = 1


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class MapFile:
    """One COG of the map: its role (labels, confidence), path in the store, and once the
    model is known, the map store variable, no-data value and overview resampling."""

    role: str
    name: str
    variable: str = ""
    nodata: float = 0.0
    resampling: str = "nearest"
    smoothed: bool = False
    """Made from the tiles' smoothed stores (the smooth stage), not their map stores."""


@dataclass(frozen=True)
class PeriodMaps:
    """One mapped period: its tiles, the grid of its maps, and its mosaic and catalog units."""

    tiles: PeriodTiles
    map_units: tuple[Unit, ...]
    catalog: Unit

    @property
    def name(self) -> str | None:
        return self.tiles.name

    @property
    def layout(self) -> RunLayout:
        return self.tiles.layout


def map_files(
    layout: RunLayout, task: str, probability_classes: tuple[int, ...] = ()
) -> list[MapFile]:
    if task == "regression":
        return [MapFile("values", layout.values_name)]
    folder = Path(layout.labels_name).parent
    return [
        MapFile("labels", layout.labels_name),
        MapFile("confidence", layout.confidence_name),
        *(
            MapFile(f"probability_{code}", (folder / f"probability_{code}.tif").as_posix())
            for code in probability_classes
        ),
    ]


SMOOTHED_PROBABILITY = "smoothed_probability_"


def smoothed_files(layout: RunLayout, probability_classes: tuple[int, ...]) -> list[MapFile]:
    """The map files of the smoothed maps (labels, confidence, each class's probability)."""
    folder = Path(layout.labels_name).parent
    return [
        MapFile("labels_smoothed", (folder / "labels_smoothed.tif").as_posix(), smoothed=True),
        MapFile(
            "confidence_smoothed", (folder / "confidence_smoothed.tif").as_posix(), smoothed=True
        ),
        *(
            MapFile(
                f"{SMOOTHED_PROBABILITY}{code}",
                (folder / f"probability_{code}_smoothed.tif").as_posix(),
                smoothed=True,
            )
            for code in probability_classes
        ),
    ]


def mosaic_units(
    files: list[MapFile], predict_digests: list[str], grid: GridSpec, *, prefix: str = ""
) -> list[Unit]:
    """One unit per map file (``prefix``: a further period's, e.g. ``2016-``)."""
    return [
        Unit(
            NAME,
            prefix + f.role,
            digest(predict_digests, f.role, f.name, grid),
            payload=f,
            pixels=grid.width * grid.height,
        )
        for f in files
    ]


def resolved(item: MapFile, encoding: Any) -> MapFile:
    """The map file with the variable, no-data and resampling of its role."""
    from pipeline.predict.blockwise import (
        CONFIDENCE_NODATA,
        CONFIDENCE_VARIABLE,
        LABEL_VARIABLE,
        PROBABILITY_NODATA,
        VALUE_VARIABLE,
        probability_variable,
    )

    role, name, smoothed = item.role, item.name, item.smoothed
    for prefix in ("probability_", SMOOTHED_PROBABILITY):
        if role.startswith(prefix):
            code = int(role.removeprefix(prefix))
            return MapFile(
                role, name, probability_variable(code), PROBABILITY_NODATA, "average", smoothed
            )
    if role == "values":  # a continuous value: its mean over the pixels below
        return MapFile(role, name, VALUE_VARIABLE, float(encoding.nodata), "average")
    if role.startswith("labels"):  # classes: the most common class of the pixels below
        return MapFile(role, name, LABEL_VARIABLE, float(encoding.nodata), "mode", smoothed)
    return MapFile(role, name, CONFIDENCE_VARIABLE, CONFIDENCE_NODATA, "average", smoothed)


@dataclass(frozen=True)
class MosaicContext:
    root: str
    tiles: tuple[tuple[str, GridSpec], ...]
    """Per tile, in tile order: its map store and its grid."""
    grid: GridSpec
    """The mosaic's grid (the only tile's grid in a single-grid run)."""
    smoothed: tuple[str, ...] = ()
    """Per tile, its smoothed store (the run's period, with smoothing)."""


def mosaic_unit(context: MosaicContext, item: MapFile) -> dict[str, Any]:
    from pipeline.predict.outputs import tiles_to_cog

    store = RunStore(context.root)
    sources = context.tiles
    if item.smoothed:
        sources = tuple(
            (url, grid) for url, (_, grid) in zip(context.smoothed, sources, strict=True)
        )
    with store.publish(item.name) as target:
        tiles_to_cog(
            sources,
            item.variable,
            context.grid,
            target,
            nodata=item.nodata,
            overview_resampling=item.resampling,
        )
        size = target.stat().st_size
    return {"bytes": int(size), "path": item.name}


def run_license(config: Any) -> tuple[str, str | None]:
    """The maps' licence and licence link: ``outputs.license`` (and ``license_url``), else the
    licence of the input collections (static catalogs) when they all agree, else 'other'."""
    from pipeline.catalog.items import collection_licenses

    outputs = config.outputs
    if outputs.license is not None:
        return outputs.license, outputs.license_url
    found: set[tuple[str, str | None]] = set()
    for sensor in config.sensors:
        catalog = sensor.catalog
        if catalog.kind != "static" or not catalog.url:
            return "other", outputs.license_url
        found |= collection_licenses(catalog.url)
    licenses = {license for license, _ in found}
    if len(licenses) != 1:
        return "other", outputs.license_url
    links = sorted({url for _, url in found if url})
    return licenses.pop(), outputs.license_url or (links[0] if len(links) == 1 else None)


@dataclass(frozen=True)
class CatalogContext:
    root: str
    run_name: str
    period: tuple[Any, Any]
    legend: tuple[ClassInfo, ...]
    files: tuple[MapFile, ...]
    catalog: str
    """Store-relative folder of the STAC collection."""
    license: tuple[str, str | None] = ("other", None)
    """The maps' licence and its link (``run_license``)."""


def catalog_unit(context: CatalogContext, _payload: Any) -> dict[str, Any]:
    """A STAC item per map file (projection, raster and, for labels, classification
    extensions) in a self-contained collection beside the maps."""
    from pipeline.predict.stac import describe_cog, output_item, write_run_catalog
    from pipeline.validate.mapped_area import count_map_classes

    store = RunStore(context.root)
    outputs = []
    counts: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        for item in context.files:
            local = stack.enter_context(store.fetch(item.name))
            percent = "%" if item.smoothed and not item.role.startswith("labels") else None
            outputs.append(describe_cog(local, role=item.role, href=item.name, unit=percent))
            if item.role.startswith("labels"):
                counts[item.role] = count_map_classes(local).pixels
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
    license, url = context.license
    name = write_run_catalog(
        store, context.catalog, items, run_name=context.run_name, license=license, license_url=url
    )
    return {"collection": name, "items": [i.id for i in items]}


def _files(config: Any, layout: RunLayout, maps: list[PeriodMaps], tiled: bool) -> dict[str, Any]:
    """The map files, catalogs and further periods' outputs, for the run summary."""
    main = maps[0]
    files: dict[str, Any] = {u.payload.role: u.payload.name for u in main.map_units}
    for prefix, key in (("probability_", "probabilities"),
                        (SMOOTHED_PROBABILITY, "probabilities_smoothed")):  # fmt: skip
        listed = [files.pop(r) for r in list(files) if r.startswith(prefix)]
        if listed:
            files[key] = listed
    files["catalog"] = layout.relative(layout.catalog / "collection.json")
    further = {
        m.name: {
            "cube": m.layout.relative(
                m.layout.cube if not tiled else m.layout.root / "periods" / m.name
            ),
            **{u.payload.role: u.payload.name for u in m.map_units},
            "catalog": m.layout.relative(m.layout.catalog / "collection.json"),
        }
        for m in maps[1:]
        if m.name is not None
    }
    if further:
        files["periods"] = further
    return files


class Mosaic:
    name = NAME
    version = VERSION
    needs = ("cube", "samples", "predict", "smooth")
    # What its units import on a worker (the map files), loaded by the cluster warm-up.
    worker_imports = ("pipeline.predict.outputs",)
    # What its units run on the driver import (the STAC catalog), imported while others compute.
    driver_imports = ("pipeline.predict.stac", "pipeline.validate.mapped_area")

    def plan(self, context: PlanContext) -> StagePlan:
        config, layout = context.config, context.layout
        cubes: Cubes = context.outputs("cube")
        predictions: Predictions = context.outputs("predict")
        samples: Samples = context.outputs("samples")
        smoothed: Smoothed = context.outputs("smooth")
        legend = samples.reference.legend
        maps = []
        for period in cubes.periods:
            files = map_files(period.layout, config.task, predictions.probability_classes)
            prefix = "" if period.name is None else f"{period.name}-"
            predicted = [u.digest for u in predictions.by_period[period.name]]
            map_units = mosaic_units(files, predicted, period.grid, prefix=prefix)
            if smoothed.on and period.name is None:
                made = [u.digest for u in smoothed.units]
                extra = smoothed_files(period.layout, predictions.probability_classes)
                map_units += mosaic_units(extra, made, period.grid, prefix=prefix)
            catalog = Unit(
                NAME,
                f"{prefix}catalog",
                digest(
                    "catalog", [u.digest for u in map_units], config.name, period.period, legend
                ),
            )
            maps.append(PeriodMaps(period, tuple(map_units), catalog))
        extraction = config.task == "extraction"
        units = [u for m in maps for u in (*m.map_units, m.catalog)]
        return StagePlan(
            NAME,
            [] if extraction else units,
            outputs=tuple(maps),
            files={} if extraction else _files(config, layout, maps, cubes.tiled),
        )

    def run(self, context: RunContext) -> None:
        config, root = context.config, context.store.root
        maps: tuple[PeriodMaps, ...] = context.stage_plan(NAME).outputs
        samples: Samples = context.stage_plan("samples").outputs
        smoothed: Smoothed = context.stage_plan("smooth").outputs
        encoding = context.results["predict"]["encoding"]
        for period in maps:  # the run's period, then each of also_map
            units = [
                Unit(u.stage, u.key, u.digest, resolved(u.payload, encoding), u.pixels)
                for u in period.map_units
            ]
            what = "" if period.name is None else f" of {period.name}"
            tiles = period.tiles
            context.run(
                StageWork(
                    NAME,
                    units,
                    mosaic_unit,
                    MosaicContext(
                        root,
                        tuple((t.map_url, t.cube.grid) for t in tiles.tiles),
                        tiles.grid,
                        tuple(context.store.url(s) for s in smoothed.stores)
                        if period.name is None
                        else (),
                    ),
                    description=f"map files{what}",
                )
            )
            context.run(
                StageWork(
                    NAME,
                    [period.catalog],
                    catalog_unit,
                    CatalogContext(
                        root,
                        config.name,
                        (tiles.period.start, tiles.period.end),
                        samples.reference.legend,
                        tuple(u.payload for u in units),
                        period.layout.catalog_name,
                        run_license(config),
                    ),
                    on_cluster=False,
                    description=f"STAC catalog{what}",
                )
            )


STAGE = Mosaic()
