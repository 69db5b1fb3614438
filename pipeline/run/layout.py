"""Where each output of a run lives inside the run store (one place, so docs and code agree).

``RunLayout(Path())`` gives the names relative to the store; ``RunLayout(Path(store))`` the local
paths. ``relative(path)`` turns either into the posix name a ``RunStore`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

#: Top-level names the run keeps for itself; user-chosen output paths may not use them.
RESERVED = frozenset(
    {"state", "items", "cube.zarr", "cubes", "samples", "model", "run.json", "periods"}
)
#: Deeper names the run keeps for itself.
RESERVED_PATHS = ("maps/map.zarr", "maps/tiles")


def reserved_by(path: str) -> str | None:
    """The reserved name ``path`` (relative, posix) falls in, if any."""
    parts = PurePosixPath(path).parts
    if parts and parts[0] in RESERVED:
        return parts[0]
    for name in RESERVED_PATHS:
        if path == name or path.startswith(name + "/"):
            return name
    return None


@dataclass(frozen=True)
class RunLayout:
    root: Path
    labels_name: str = "maps/labels.tif"
    confidence_name: str = "maps/confidence.tif"
    report_name: str = "report"
    values_name: str = "maps/values.tif"
    catalog_name: str = "stac"
    period: str | None = None
    """A further period of the run (spec.also_map): its cubes and maps live in
    ``periods/<name>/``, under the same names as the first period's."""

    def for_period(self, name: str) -> RunLayout:
        """The layout of the cubes and maps of the further period ``name``."""
        folder = f"periods/{name}/"
        return RunLayout(
            self.root,
            folder + self.labels_name,
            folder + self.confidence_name,
            self.report_name,
            folder + self.values_name,
            folder + self.catalog_name,
            period=name,
        )

    @property
    def _base(self) -> Path:
        return self.root if self.period is None else self.root / "periods" / self.period

    def relative(self, path: Path) -> str:
        """The store-relative posix name of one of this layout's paths."""
        return path.relative_to(self.root).as_posix()

    @property
    def items(self) -> Path:
        """Resolved STAC items, one ItemCollection per sensor: the run's exact inputs."""
        return self.root / "items"

    def items_of(self, sensor: str) -> Path:
        return self.items / f"{sensor}.json"

    @property
    def cube(self) -> Path:
        """Gap-filled feature cube (Zarr v3) of a single-grid run."""
        return self._base / "cube.zarr"

    def cube_of(self, tile: str | None) -> Path:
        """The cube of one tile (``cubes/<tile>.zarr``), or ``cube.zarr`` without tiles."""
        return self.cube if tile is None else self._base / "cubes" / f"{tile}.zarr"

    @property
    def samples(self) -> Path:
        """Sample pixels with their split and features (GeoParquet)."""
        return self.root / "samples" / "samples.parquet"

    @property
    def sample_parts(self) -> Path:
        """Per-chunk extracted features, assembled into ``samples``."""
        return self.root / "samples" / "parts"

    @property
    def model(self) -> Path:
        """Fitted model and its feature contract."""
        return self.root / "model"

    @property
    def map_store(self) -> Path:
        """Labels and confidence as Zarr (what the COGs are made from)."""
        return self._base / "maps" / "map.zarr"

    def regions_of(self, tile: str | None) -> Path:
        """The region index of a grid (Zarr), read by the prediction of a run with regions."""
        return self.root / "maps" / "regions" / f"{tile or 'grid'}.zarr"

    def map_store_of(self, tile: str | None) -> Path:
        return self.map_store if tile is None else self._base / "maps" / "tiles" / f"{tile}.zarr"

    @property
    def labels(self) -> Path:
        return self.root / self.labels_name

    @property
    def confidence(self) -> Path:
        return self.root / self.confidence_name

    @property
    def values(self) -> Path:
        """The predicted value map of a regression run."""
        return self.root / self.values_name

    @property
    def catalog(self) -> Path:
        """The STAC collection of the map files (one item per COG)."""
        return self.root / self.catalog_name

    @property
    def report(self) -> Path:
        return self.root / self.report_name

    @property
    def summary(self) -> Path:
        """What ran, how long each stage took, and where every output is."""
        return self.root / "run.json"

    @property
    def state(self) -> Path:
        """The run's own bookkeeping: ledger, stage contexts, sessions, last manifest."""
        return self.root / "state"

    @property
    def manifest(self) -> Path:
        return self.state / "manifest.json"

    @property
    def sessions(self) -> Path:
        return self.state / "sessions"

    def written(self) -> list[Path]:
        """Every path the run writes or replaces (inputs must stay out of them)."""
        return [
            self.state,
            self.items,
            self.root / "cube.zarr",
            self.root / "cubes",
            self.root / "samples",
            self.model,
            self.map_store,
            self.root / "maps" / "tiles",
            self.root / "maps" / "regions",
            self.labels,
            self.confidence,
            self.values,
            self.catalog,
            self.report,
            self.summary,
            self.root / "periods",
        ]
