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


def _normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / (a + b)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


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
            stack = np.stack([np.asarray(v, dtype=np.float32) for v in bands.values()])
            out[name] = np.sqrt(np.sum(stack * stack, axis=0)).astype(np.float32)
        else:
            raise ValueError(f"unknown index {name!r}; known: {sorted(INDEX_BANDS)}")
    return out
