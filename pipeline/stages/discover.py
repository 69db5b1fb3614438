"""discover: the acquisitions of every sensor over the dates the run covers (one unit: the
item lists saved to the store, read back by a later session instead of searching again)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac

from pipeline.catalog.assets import SkippedItem
from pipeline.catalog.items import discovery_fingerprint, save_items
from pipeline.catalog.sensors import SensorProfile, sensor_profiles
from pipeline.catalog.static import find_acquisitions
from pipeline.learn.contract import seasonal_features
from pipeline.model import Acquisition
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.executor import StageWork
from pipeline.run.layout import RunLayout
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit
from pipeline.samples.reference import reference_windows
from pipeline.stages.common import unsigned
from pipeline.storage import RunStore

NAME = "discover"
VERSION = 1

Sensors = list[tuple[SensorProfile, list[Acquisition]]]


def digest(*parts: Any) -> str:
    return stage_digest(NAME, VERSION, *parts)


@dataclass(frozen=True)
class Discovered:
    sensors: Sensors
    """Per sensor profile: its acquisitions over ``span``."""
    items: dict[str, tuple[list[pystac.Item], str]]
    """Per sensor profile: the items used and their discovery fingerprint."""
    span: tuple[Any, Any]
    windows: tuple[tuple[Any, Any], ...]
    """The samples' own time windows (reference start_field), sorted; empty without."""
    seasonal: bool
    """Features named by position in the season rather than by date (see ``plan``)."""


def span_of(config: Any, windows: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
    """The dates discovery covers: every mapped period and every sample window."""
    periods = [(config.period.start, config.period.end)]
    periods += [(p.start, p.end) for p in config.also_map]
    periods += list(windows)
    return min(a for a, _ in periods), max(b for _, b in periods)


def _saved_items(store: RunStore, layout: RunLayout, name: str, scratch: Path) -> Path | None:
    """The item list a previous session saved (a local copy for remote stores), if any."""
    relative = layout.relative(layout.items_of(name))
    if not store.exists(relative):
        return None
    if not store.remote:
        return store.local_path(relative)
    local = scratch / f"{name}.json"
    store.download(relative, local)
    return local


def _discover(
    config: Any,
    store: RunStore,
    layout: RunLayout,
    span: tuple[Any, Any],
    skipped: list[SkippedItem],
) -> tuple[Sensors, dict[str, tuple[list[pystac.Item], str]]]:
    start, end = span
    sensors: Sensors = []
    items: dict[str, tuple[list[pystac.Item], str]] = {}
    with tempfile.TemporaryDirectory(prefix="sitsflow-items-") as scratch:
        for i, sensor_spec in enumerate(config.sensors):
            for profile in sensor_profiles(sensor_spec):
                saved = _saved_items(store, layout, profile.name, Path(scratch))
                acquisitions, raw = find_acquisitions(
                    sensor_spec.catalog,
                    profile,
                    start,
                    end,
                    field=f"sensors[{i}]",
                    saved=saved,
                    skipped=skipped,
                )
                sensors.append((profile, acquisitions))
                fingerprint = discovery_fingerprint(sensor_spec.catalog, start, end)
                items[profile.name] = (raw, fingerprint)
    return sensors, items


@dataclass(frozen=True)
class ItemsContext:
    root: str
    layout: RunLayout
    items: dict[str, tuple[list[pystac.Item], str]]


def save_items_unit(context: ItemsContext, _payload: Any) -> dict[str, Any]:
    store, layout = RunStore(context.root), context.layout
    counts = {}
    for name, (items, fingerprint) in context.items.items():
        with store.publish(layout.relative(layout.items_of(name))) as path:
            save_items(items, path, fingerprint=fingerprint)
        counts[name] = len(items)
    return {"items": counts}


class Discover:
    name = NAME
    version = VERSION
    needs: tuple[str, ...] = ()

    def plan(self, context: PlanContext) -> StagePlan:
        config = context.config
        windows = tuple(reference_windows(config.reference, config.period))
        # Samples of several seasons, or maps of several periods: features named by position
        # in the season (the rule's one home is the library's, train_from_table asks it too).
        seasonal = seasonal_features(bool(windows), config.also_map)
        span = span_of(config, windows)
        skipped: list[SkippedItem] = []  # bad items left out (on_bad_item: skip)
        sensors, items = _discover(config, context.store, context.layout, span, skipped)
        made = digest([(p, unsigned(a)) for p, a in sensors], span)
        layout = context.layout
        return StagePlan(
            NAME,
            [Unit(NAME, "items", made)],
            digest=made,
            digests={NAME: made},
            outputs=Discovered(sensors, items, span, windows, seasonal),
            files={"items": layout.relative(layout.items)},
            # In the run summary (its estimate): what the run left out and why.
            facts={"skipped_items": [s.as_dict() for s in skipped]} if skipped else {},
        )

    def run(self, context: RunContext) -> None:
        plan = context.stage_plan(NAME)
        found: Discovered = plan.outputs
        context.run(
            StageWork(
                NAME,
                plan.units,
                save_items_unit,
                ItemsContext(context.store.root, context.layout, found.items),
                on_cluster=False,
                description="item lists",
            )
        )


STAGE = Discover()
