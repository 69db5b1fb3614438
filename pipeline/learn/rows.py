"""A block's pixels as the table a pixel model reads: two compiled passes, no new array.

A pixel model predicts rows of features (n_pixels, n_features), C-contiguous (tree models read
a row's features together), of the pixels whose features are all finite. A block comes as
(n_features, h, w). numpy made that table in three passes and three new arrays (the NaN test,
the transposed copy, the valid rows); here one kernel finds the valid pixels, plane by plane,
and another copies each valid pixel's features into its row of a buffer the thread reuses:
0.12 s instead of 0.30 s for a 512 px chunk of 185 features (``bench.chain``'s chunk; tiling
the copy by 64 or 16 features measured no faster), every value the same.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.buffers import thread_buffers

__all__ = ["load_kernels", "pixel_rows", "valid_pixels"]


def valid_pixels(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, pixels)`` of a (n_features, h, w) block: ``valid`` (h * w,) marks the pixels
    whose features are all finite (none NaN), the pixels a model predicts; ``pixels`` are their
    flat indices (C order, int64)."""
    _, height, width = block.shape
    valid = np.empty(height * width, dtype=bool)
    _valid_pixels(block, valid)
    return valid, np.flatnonzero(valid)


def pixel_rows(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, rows)`` of a float32 (n_features, h, w) block (any strides): ``valid`` (h * w,)
    marks the pixels whose features are all finite (none NaN), ``rows`` (n_valid, n_features)
    their features in C order of the pixels, C-contiguous.

    ``rows`` is this thread's buffer, valid until the thread's next call.
    """
    n_features, height, width = block.shape
    valid = np.empty(height * width, dtype=bool)
    n_valid = _valid_pixels(block, valid)
    rows = thread_buffers().take("pixel-rows", (n_valid, n_features), block.dtype)
    _copy_rows(block, valid, rows)
    return valid, rows


@numba.njit(cache=True, nogil=True)
def _valid_pixels(block: np.ndarray, valid: np.ndarray) -> int:  # pragma: no cover  (compiled)
    """``valid[p]``: no feature of pixel p is NaN (features outer: each plane read in order)."""
    n_features, height, width = block.shape
    valid[:] = True
    for f in range(n_features):
        for r in range(height):
            for c in range(width):
                if np.isnan(block[f, r, c]):
                    valid[r * width + c] = False
    return int(valid.sum())


@numba.njit(cache=True, nogil=True)
def _copy_rows(
    block: np.ndarray, valid: np.ndarray, rows: np.ndarray
) -> None:  # pragma: no cover  (compiled)
    n_features, height, width = block.shape
    row = 0
    for r in range(height):
        for c in range(width):
            if valid[r * width + c]:
                for f in range(n_features):
                    rows[row, f] = block[f, r, c]
                row += 1


def load_kernels() -> None:
    """Load (or compile) the kernels for the block types prediction uses."""
    for dtype in (np.float32, np.float64):
        block = np.ones((2, 2, 2), dtype=dtype)
        pixel_rows(block)
        pixel_rows(block[:, :1, :])  # a strided view (a block without its halo)
