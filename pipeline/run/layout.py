"""Where each output of a run lives inside the run store (one place, so docs and code agree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def items(self) -> Path:
        """Resolved STAC items, one ItemCollection per sensor: the run's exact inputs."""
        return self.root / "items"

    def items_of(self, sensor: str) -> Path:
        return self.items / f"{sensor}.json"

    @property
    def cube(self) -> Path:
        """Gap-filled feature cube (Zarr v3)."""
        return self.root / "cube.zarr"

    @property
    def samples(self) -> Path:
        """Sample pixels with their split and features (GeoParquet)."""
        return self.root / "samples" / "samples.parquet"

    @property
    def model(self) -> Path:
        """Fitted model and its feature contract."""
        return self.root / "model"

    @property
    def map_store(self) -> Path:
        """Labels and confidence as Zarr (what the COGs are made from)."""
        return self.root / "maps" / "map.zarr"

    @property
    def labels(self) -> Path:
        return self.root / "maps" / "labels.tif"

    @property
    def confidence(self) -> Path:
        return self.root / "maps" / "confidence.tif"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def summary(self) -> Path:
        """What ran, how long each stage took, and where every output is."""
        return self.root / "run.json"
