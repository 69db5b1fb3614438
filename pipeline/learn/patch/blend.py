"""Overlapping patches blended with a smooth window: seamless at chunk borders.

The patches of a block sit on a lattice of step ``stride`` anchored at the block's core (the
chunk without its halo). Chunks start at multiples of the chunk size, a multiple of the stride
(checked when the run is planned), so every chunk's lattice is the same global lattice: a pixel
gets the same patches, with the same weights, whichever chunk predicts it, and the chunked map
equals the whole image predicted at once (to float rounding). Each patch's outputs are weighted
by a window that is highest at its centre and small (never zero) at its edges, so the patch
borders, where a network sees least context, weigh least and leave no seam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["blend_block", "lattice_halo", "patch_starts", "window_weights"]


def lattice_halo(size: int, stride: int) -> int:
    """Pixels needed around a core so that every patch of the lattice that covers a core pixel
    lies inside the block: the farthest lattice start before the core."""
    return ((size - 1) // stride) * stride


def window_weights(size: int) -> np.ndarray:
    """(size, size) float64 separable triangular (Bartlett-like) window, positive everywhere."""
    centre = (size - 1) / 2
    ramp = 1.0 - np.abs(np.arange(size) - centre) / (centre + 1.0)
    return np.outer(ramp, ramp)


def patch_starts(length: int, halo: int, size: int, stride: int) -> list[int]:
    """Starts (block coordinates) of the lattice patches that overlap the core of an axis of
    ``length`` block pixels (core: halo .. length - halo)."""
    core_end = length - halo
    first = halo - ((size - 1) // stride) * stride
    return [s for s in range(first, core_end, stride) if s + size > halo]


def _tiles(height: int, width: int, halo: int, size: int, stride: int) -> Iterator[tuple[int, int]]:
    for r in patch_starts(height, halo, size, stride):
        for c in patch_starts(width, halo, size, stride):
            yield r, c


def blend_block(
    block: np.ndarray,
    halo: int,
    size: int,
    stride: int,
    predict: Callable[[np.ndarray], np.ndarray],
    n_outputs: int,
    batch: int | Callable[[int], int] = 32,
) -> np.ndarray:
    """(n_outputs, h, w) blended outputs for the core of ``block`` ((n_features, h + 2 halo,
    w + 2 halo), NaN where missing). ``predict`` maps (b, n_features, size, size) to
    (b, n_outputs, size, size). Patches that reach past the block (the grid's last, partial
    chunks) see NaN there, as the whole image does off the grid's edge; patches without a
    finite value are skipped. ``batch``: patches per call of ``predict``, or a function of the
    block's number of patches that gives it."""
    n_features, height, width = block.shape
    core_h, core_w = height - 2 * halo, width - 2 * halo
    starts = list(_tiles(height, width, halo, size, stride))
    need_h = max([r + size for r, _ in starts], default=height)
    need_w = max([c + size for _, c in starts], default=width)
    if need_h > height or need_w > width:
        grown = np.full((n_features, max(need_h, height), max(need_w, width)), np.nan, np.float32)
        grown[:, :height, :width] = block
        block = grown
    weights = window_weights(size)
    total = np.zeros((n_outputs, core_h, core_w), np.float64)
    weight_sum = np.zeros((core_h, core_w), np.float64)
    kept = [(r, c) for r, c in starts if np.isfinite(block[:, r : r + size, c : c + size]).any()]
    if callable(batch):
        batch = batch(len(kept))
    for first in range(0, len(kept), batch):
        group = kept[first : first + batch]
        patches = np.stack([block[:, r : r + size, c : c + size] for r, c in group])
        outputs = predict(patches)
        for (r, c), out in zip(group, outputs, strict=True):
            # The part of the patch inside the core, in core and in patch coordinates.
            r0, c0 = max(r, halo), max(c, halo)
            r1, c1 = min(r + size, halo + core_h), min(c + size, halo + core_w)
            if r0 >= r1 or c0 >= c1:
                continue
            pr, pc = slice(r0 - r, r1 - r), slice(c0 - c, c1 - c)
            w = weights[pr, pc]
            total[:, r0 - halo : r1 - halo, c0 - halo : c1 - halo] += w * out[:, pr, pc]
            weight_sum[r0 - halo : r1 - halo, c0 - halo : c1 - halo] += w
    return (total / np.maximum(weight_sum, 1e-12)).astype(np.float32)
