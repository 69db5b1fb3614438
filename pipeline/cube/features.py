"""Spectral indices computed on gap-filled bands (after gap-filling, as the original chain does)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numba
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


def _normalized_difference(
    a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """(a - b) / (a + b) in float32, NaN where a + b is 0 (x / 0 and 0 / 0) or an input is NaN:
    one compiled pass, no temporary."""
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    b32 = np.ascontiguousarray(b, dtype=np.float32)
    if a32.shape != b32.shape:
        a32, b32 = (np.ascontiguousarray(x) for x in np.broadcast_arrays(a32, b32))
    out = _output(out, a32.shape)
    _normalized_difference_kernel(a32.reshape(-1), b32.reshape(-1), out.reshape(-1))
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _normalized_difference_kernel(
    a: np.ndarray, b: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover  (compiled)
    # float32 throughout, as numpy's (a - b) / (a + b) on float32 arrays: the same bits.
    for i in range(a.shape[0]):
        ratio = (a[i] - b[i]) / (a[i] + b[i])
        out[i] = np.nan if np.isinf(ratio) else ratio


def _brightness(bands: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """sqrt(sum of squares) of the bands in float32 (bands added in order, as numpy would)."""
    stack = [np.ascontiguousarray(v, dtype=np.float32) for v in bands]
    shape = stack[0].shape
    total = _output(out, shape)
    total.fill(0)
    flat_total = total.reshape(-1)
    for band in stack:
        _add_square(flat_total, np.broadcast_to(band, shape).reshape(-1))
    return np.sqrt(total, out=total)


@numba.njit(cache=True, nogil=True)
def _add_square(total: np.ndarray, value: np.ndarray) -> None:  # pragma: no cover  (compiled)
    for i in range(total.shape[0]):
        total[i] += value[i] * value[i]


def compute_indices(
    bands: Mapping[str, np.ndarray],
    indices: Sequence[str],
    *,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Indices by name, from gap-filled bands of equal shape (NaN where a pixel was never valid).

    out: index name -> a C-contiguous float32 array of the bands' shape to fill instead of a
    new one (an index not in it gets a new array).
    """
    result: dict[str, np.ndarray] = {}
    given = out or {}
    for name in indices:
        target = given.get(name)
        if name == "ndvi":
            result[name] = _normalized_difference(bands["nir"], bands["red"], target)
        elif name == "ndwi":
            # McFeeters (1996): open water is positive.
            result[name] = _normalized_difference(bands["green"], bands["nir"], target)
        elif name == "brightness":
            result[name] = _brightness(list(bands.values()), target)
        else:
            raise ValueError(f"unknown index {name!r}; known: {sorted(INDEX_BANDS)}")
    return result


def _output(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"an index output must be a C-contiguous float32 array of shape {shape}, "
            f"got {out.dtype} {out.shape}"
        )
    return out
