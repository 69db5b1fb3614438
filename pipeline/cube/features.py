"""Spectral indices computed on gap-filled bands (after gap-filling, as the original chain does)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Each index: the bands it needs and the function of those bands.
INDEX_BANDS: dict[str, tuple[str, ...]] = {
    "ndvi": ("red", "nir"),
    "ndwi": ("green", "nir"),
    "brightness": (),  # every band
}
DEFAULT_INDICES = ("ndvi", "ndwi", "brightness")


def default_indices(band_names: Sequence[str]) -> tuple[str, ...]:
    """The default indices a sensor's bands allow: ndvi (red, nir), ndwi (green, nir) and
    brightness (two bands or more: the brightness of one band is that band)."""
    chosen = []
    for name in DEFAULT_INDICES:
        needed = INDEX_BANDS[name]
        allowed = all(b in band_names for b in needed) if needed else len(band_names) >= 2
        if allowed:
            chosen.append(name)
    return tuple(chosen)


def _normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a - b
        total = a + b
        out /= total
    np.copyto(out, np.float32(np.nan), where=np.isinf(out))  # x / 0; 0 / 0 is NaN already
    return out


def compute_indices(
    bands: Mapping[str, np.ndarray], indices: Sequence[str]
) -> dict[str, np.ndarray]:
    """Indices by name, from gap-filled bands of equal shape (NaN where a pixel was never valid)."""
    out: dict[str, np.ndarray] = {}
    for name in indices:
        if name == "ndvi":
            out[name] = _normalized_difference(bands["nir"], bands["red"])
        elif name == "ndwi":
            # McFeeters (1996): open water is positive.
            out[name] = _normalized_difference(bands["green"], bands["nir"])
        elif name == "brightness":
            total = np.zeros(next(iter(bands.values())).shape, dtype=np.float32)
            for value in bands.values():
                v = np.asarray(value, dtype=np.float32)
                total += v * v
            out[name] = np.sqrt(total, out=total)
        else:
            raise ValueError(f"unknown index {name!r}; known: {sorted(INDEX_BANDS)}")
    return out
