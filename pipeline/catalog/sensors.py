"""Sensor profiles: which assets hold which bands, how to scale them, what makes a pixel invalid.

A profile is data, not code: adding a sensor is adding a description. The manifest's ``sensors``
entries are turned into these frozen profiles once, at the edge; workers only see profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.manifest import SensorSpec


@dataclass(frozen=True)
class BandRead:
    """One band of a sensor: the name it gets in the cube and how to read it from its asset."""

    name: str
    asset: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None  # None: the file's own no-data value


@dataclass(frozen=True)
class MaskRule:
    """A quality layer: a pixel is invalid where its value is listed or one of the bits is set."""

    asset: str
    invalid_values: tuple[int, ...] = ()
    invalid_bits: tuple[int, ...] = ()

    def invalid(self, raw: np.ndarray) -> np.ndarray:
        """Boolean array, True where ``raw`` (integer quality values) marks the pixel invalid."""
        raw = raw.astype(np.int64, copy=False)
        bad = np.zeros(raw.shape, dtype=bool)
        if self.invalid_values:
            bad |= np.isin(raw, np.asarray(self.invalid_values, dtype=np.int64))
        if self.invalid_bits:
            bitmask = 0
            for bit in self.invalid_bits:
                bitmask |= 1 << bit
            bad |= (raw & bitmask) != 0
        return bad


@dataclass(frozen=True)
class SensorProfile:
    """Everything needed to turn one sensor's acquisitions into valid, scaled bands."""

    name: str
    bands: tuple[BandRead, ...]
    masks: tuple[MaskRule, ...]
    date_step_days: int

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def assets(self) -> tuple[str, ...]:
        """Every asset key the profile reads, bands first, without repeats."""
        keys = [b.asset for b in self.bands] + [m.asset for m in self.masks]
        return tuple(dict.fromkeys(keys))

    @classmethod
    def from_spec(cls, spec: SensorSpec) -> SensorProfile:
        return cls(
            name=spec.name,
            bands=tuple(
                BandRead(name, b.asset, b.scale, b.offset, b.nodata)
                for name, b in spec.bands.items()
            ),
            masks=tuple(
                MaskRule(m.asset, tuple(m.invalid_values), tuple(m.invalid_bits))
                for m in spec.masks
            ),
            date_step_days=spec.date_step_days,
        )
