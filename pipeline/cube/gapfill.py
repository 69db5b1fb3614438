"""Temporal gap filling: put every pixel's series on a common set of target dates.

Policy of the chain (the one rule every cube follows):

* A target date gets the linear interpolation in time between the last valid acquisition at or
  before it and the first valid acquisition at or after it; an acquisition exactly on a target
  date gives its own value exactly.
* Before the first valid acquisition and after the last one, the nearest valid value is held
  constant. Slopes are never extrapolated: one cloudy edge would otherwise explode the series.
* A pixel with no valid acquisition is NaN on every target date, with ``valid_count`` 0.
* An acquisition is valid where ``valid`` is True and its value is finite (NaN and +-inf count
  as clouds: they would poison the interpolation).
* Acquisitions at the same instant (equal ``acquisition_days``, e.g. the two 2015-12-08 passes
  once dates are rounded to days) are merged first: per pixel, the mean of those that are valid,
  valid if at least one is. The result is then exactly ``np.interp`` on the merged valid points
  of each pixel (up to float32 rounding). ``valid_count`` still counts acquisitions.

Broadcasting of ``valid`` (the one rule): ``valid`` is aligned with ``values`` on the first (time)
axis and on its trailing axes; the axes it lacks are inserted right after time, then NumPy
broadcasting applies. With ``values`` of shape (T, B, H, W), a cloud mask of shape (T, H, W)
applies to every band; (T, 1, H, W), (T, B, H, W) and (T,) are accepted as well.

How it stays fast on (T=70, B=10, 256, 256) chunks: one compiled pass (numba) over the pixels,
no per-pixel Python loop and no (T, pixels) temporary beyond the one-byte mask. Per pixel the
kernel lists the usable acquisitions (valid and finite in every band), walks the sorted targets
with two pointers into that list (last usable at or before, first at or after), computes each
target's weight once and applies it to every band. The arithmetic is that of the numpy
formulation it replaced, operation by operation (float64 weights, float32 values), so the
numbers are the same to the bit. Memory beyond the inputs: the (B, D, pixels) float32 output.
The first call in a process compiles the kernel, or loads it from numba's cache (``cache=True``:
next to this file, else under ``$NUMBA_CACHE_DIR`` or the user's cache directory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["GapFilled", "gapfill", "gapfill_bands"]


@dataclass(frozen=True)
class GapFilled:
    """A gap-filled series and how much real data stands behind each pixel."""

    values: npt.NDArray[np.float32]
    """(D, *pixel_shape) float32: the series on the target dates (NaN where never valid)."""
    valid_count: npt.NDArray[np.uint16]
    """(*pixel_shape) uint16: number of valid acquisitions per pixel (0: all NaN)."""


def gapfill(
    values: npt.ArrayLike,
    valid: npt.ArrayLike,
    acquisition_days: npt.ArrayLike,
    target_days: npt.ArrayLike,
) -> GapFilled:
    """Fill cloud gaps by linear interpolation in time, holding the ends constant.

    values: (T, *pixel_shape) real numbers, one slice per acquisition (C-contiguous input avoids
        one copy).
    valid: boolean, True where the acquisition is usable; broadcasting as in the module
        docstring. It must be boolean: a 0/1 cloud mask cast silently would be inverted.
    acquisition_days: (T,) days (fractions allowed, e.g. days since 1970), non-decreasing.
    target_days: (D,) days on which the series is wanted, non-decreasing.

    Raises ValueError on inconsistent shapes, unsorted or non-finite dates, a non-boolean mask
    or more than 65535 acquisitions (``valid_count`` is uint16).
    """
    vals = np.asarray(values)
    if vals.ndim < 1:
        raise ValueError("gapfill: values must have a time axis first, got a scalar")
    if not (np.issubdtype(vals.dtype, np.floating) or np.issubdtype(vals.dtype, np.integer)):
        raise ValueError(f"gapfill: values must be real numbers, got dtype {vals.dtype}")
    n_time = vals.shape[0]
    pixel_shape = vals.shape[1:]
    if n_time > np.iinfo(np.uint16).max:
        raise ValueError(
            f"gapfill: {n_time} acquisitions do not fit valid_count (uint16, at most 65535); "
            "split the time axis"
        )
    acq = _days("acquisition_days", acquisition_days)
    tgt = _days("target_days", target_days)
    if acq.shape[0] != n_time:
        raise ValueError(
            f"gapfill: acquisition_days has {acq.shape[0]} dates but values has {n_time} "
            "acquisitions on its first axis"
        )
    mask = _broadcast_valid(valid, vals.shape)  # a read-only view, never a copy

    times, vals, mask, merged_count = _merge_simultaneous(acq, vals, mask)
    n = times.shape[0]
    n_tgt = tgt.shape[0]
    n_pix = math.prod(pixel_shape)
    if n == 0:
        empty = np.full((n_tgt, *pixel_shape), np.nan, dtype=np.float32)
        return GapFilled(values=empty, valid_count=np.zeros(pixel_shape, dtype=np.uint16))

    # Usable = valid (and finite: the kernel checks that), one byte per acquisition and pixel.
    usable = np.empty((n, n_pix), dtype=np.bool_)
    for i in range(n):
        np.copyto(usable[i].reshape(pixel_shape), mask[i])
    out, count = _fill(_work_values(vals, n, 1, n_pix), usable, times, tgt)
    if merged_count is not None:
        count = merged_count.reshape(-1)  # acquisitions, not instants
    return GapFilled(
        values=out.reshape(n_tgt, *pixel_shape), valid_count=count.reshape(pixel_shape)
    )


def gapfill_bands(
    values: npt.ArrayLike,
    valid: npt.ArrayLike,
    acquisition_days: npt.ArrayLike,
    target_days: npt.ArrayLike,
    *,
    valid_is_finite: bool = False,
    out: np.ndarray | None = None,
) -> GapFilled:
    """Gap-fill several bands that share one validity mask, finding the brackets once.

    values: (T, B, *pixel_shape); valid: (T, *pixel_shape) boolean. An acquisition is usable at
    a pixel where it is valid and every band is finite there (one cloud mask for all bands, as
    a sensor's quality layer gives). The result's values are band first, (B, D, *pixel_shape)
    (each band's series contiguous, as the cube stores it), and equal
    ``gapfill(values, usable[:, None], ...).values.swapaxes(0, 1)`` with that combined mask, at
    about 1/B of the cost of the bracket search. Integer inputs of 16 bits or less are worked
    on in float32 (exact).

    valid_is_finite: True promises that every band is finite wherever ``valid`` is True (as
    ``read_sensor`` builds its mask); the kernel then skips its pass over the values that checks
    it. A broken promise puts NaN into the output instead of skipping the acquisition.
    out: a C-contiguous float32 (B, D, *pixel_shape) array to fill instead of a new one.
    """
    vals = np.asarray(values)
    mask = np.asarray(valid)
    if vals.ndim < 2 or mask.dtype != np.bool_ or mask.shape != vals.shape[:1] + vals.shape[2:]:
        raise ValueError(
            f"gapfill_bands: values (T, B, ...) of shape {vals.shape} need a boolean valid mask "
            f"of shape {vals.shape[:1] + vals.shape[2:]}, got {mask.dtype} {mask.shape}"
        )
    if not (np.issubdtype(vals.dtype, np.floating) or np.issubdtype(vals.dtype, np.integer)):
        raise ValueError(f"gapfill_bands: values must be real numbers, got dtype {vals.dtype}")
    n_time, n_bands = vals.shape[:2]
    pixel_shape = vals.shape[2:]
    acq = _days("acquisition_days", acquisition_days)
    tgt = _days("target_days", target_days)
    if acq.shape[0] != n_time:
        raise ValueError(
            f"gapfill_bands: acquisition_days has {acq.shape[0]} dates but values has "
            f"{n_time} acquisitions on its first axis"
        )
    n_pix = math.prod(pixel_shape)
    n_tgt = tgt.shape[0]
    shape = (n_bands, n_tgt, *pixel_shape)
    if out is not None and (
        out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"gapfill_bands: out must be a C-contiguous float32 array of shape {shape}, got "
            f"{out.dtype} {out.shape}"
        )
    if np.unique(acq).shape[0] != n_time:
        # Simultaneous acquisitions are merged band by band: the general path does that.
        usable = mask & np.isfinite(vals).all(axis=1) if vals.dtype.kind == "f" else mask
        filled = gapfill(vals, usable[:, None], acq, tgt)
        result = filled.values.swapaxes(0, 1)
        target = np.empty(shape, dtype=np.float32) if out is None else out
        np.copyto(target, result)
        return GapFilled(target, filled.valid_count)
    if n_time == 0:
        empty = np.empty(shape, dtype=np.float32) if out is None else out
        empty.fill(np.nan)
        return GapFilled(values=empty, valid_count=np.zeros(pixel_shape, dtype=np.uint16))
    usable = np.ascontiguousarray(mask).reshape(n_time, n_pix)
    work = _work_values(vals, n_time, n_bands, n_pix)
    flat_out = None if out is None else out.reshape(n_bands, n_tgt, n_pix)
    result, count = _fill(work, usable, acq, tgt, check_finite=not valid_is_finite, out=flat_out)
    values_out = result.reshape(shape) if out is None else out
    return GapFilled(values=values_out, valid_count=count.reshape(pixel_shape))


def _work_values(vals: np.ndarray, n_time: int, n_bands: int, n_pix: int) -> np.ndarray:
    """``vals`` as a C-contiguous (T, B, pixels) array of the working dtype: float32 for float32
    or smaller floats and 16-bit or smaller integers (exact in float32; the output is float32
    anyway), else float64 (wider integers and float64 would be rounded). No copy for
    C-contiguous float32 or float64 input."""
    small = (vals.dtype.kind == "f" and vals.dtype.itemsize <= 4) or (
        vals.dtype.kind in "iub" and vals.dtype.itemsize <= 2
    )
    work = np.float32 if small else np.float64
    return np.ascontiguousarray(vals, dtype=work).reshape(n_time, n_bands, n_pix)


def _fill(
    work: np.ndarray,
    usable: npt.NDArray[np.bool_],
    times: npt.NDArray[np.float64],
    tgt: npt.NDArray[np.float64],
    *,
    check_finite: bool = True,
    out: np.ndarray | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint16]]:
    """Run the compiled kernel: (B, D, pixels) float32 (into ``out`` when given) and the
    (pixels,) valid counts."""
    _, n_bands, n_pix = work.shape
    n_tgt = tgt.shape[0]
    if out is None:
        out = np.empty((n_bands, n_tgt, n_pix), dtype=np.float32)
    count = np.empty(n_pix, dtype=np.uint16)
    _fill_kernel(
        work,
        usable,
        times,
        tgt,
        np.searchsorted(times, tgt, side="right") - 1,  # last acquisition at or before
        np.searchsorted(times, tgt, side="left"),  # first acquisition at or after
        np.empty((n_tgt, _BLOCK), dtype=work.dtype),  # weights, in the working dtype
        check_finite,
        out,
        count,
    )
    return out, count


_BLOCK = 512
"""Pixels per block: every per-block array (T x block flags, D x block brackets and weights)
stays in the CPU cache, and the inner loops run over contiguous pixels."""


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fill_kernel(
    values: np.ndarray,
    mask: np.ndarray,
    times: np.ndarray,
    targets: np.ndarray,
    last_at_or_before: np.ndarray,
    first_at_or_after: np.ndarray,
    weight: np.ndarray,
    check_finite: bool,
    out: np.ndarray,
    count: np.ndarray,
) -> None:  # pragma: no cover  (compiled)
    """Gap-fill ``values`` (T, B, P) into ``out`` (B, D, P) and count usable acquisitions.

    An acquisition is usable at a pixel where ``mask`` (T, P) is True and every band is finite
    (checked unless ``check_finite`` is False: the caller's mask already says so). Per block of
    pixels, a forward pass over the acquisitions tracks the last usable one (the bracket below
    each target: the last at or before it), a backward pass the first usable one at or after
    it; a missing side takes the other one (the ends are held), both missing give NaN. The
    arithmetic is the numpy formulation's, in the same order and precision: the weight
    ``(target - t_lo) / span`` in float64 (``span`` 1 where lo == hi) cast to the working dtype
    of ``values``, then ``v_lo + (v_hi - v_lo) * weight`` in that dtype.
    """
    n_time, n_bands, n_pix = values.shape
    n_tgt = targets.shape[0]
    block = weight.shape[1]
    usable = np.empty((n_time, block), dtype=np.bool_)
    last = np.empty(block, dtype=np.int32)
    lo = np.empty((n_tgt, block), dtype=np.int32)
    hi = np.empty((n_tgt, block), dtype=np.int32)
    for start in range(0, n_pix, block):
        n = min(block, n_pix - start)
        for i in range(n_time):
            for j in range(n):
                usable[i, j] = mask[i, start + j]
            if not check_finite:
                continue
            for b in range(n_bands):
                for j in range(n):
                    usable[i, j] &= np.isfinite(values[i, b, start + j])
        for j in range(n):
            total = 0
            for i in range(n_time):
                total += usable[i, j]
            count[start + j] = total
        # Forward: the last usable acquisition at or before each target (-1: none).
        last[:n] = -1
        k = 0
        while k < n_tgt and last_at_or_before[k] < 0:
            lo[k, :n] = -1
            k += 1
        for i in range(n_time):
            for j in range(n):
                if usable[i, j]:
                    last[j] = i
            while k < n_tgt and last_at_or_before[k] == i:
                lo[k, :n] = last[:n]
                k += 1
        # Backward: the first usable acquisition at or after each target (-1: none).
        last[:n] = -1
        k = n_tgt - 1
        while k >= 0 and first_at_or_after[k] >= n_time:
            hi[k, :n] = -1
            k -= 1
        for i in range(n_time - 1, -1, -1):
            for j in range(n):
                if usable[i, j]:
                    last[j] = i
            while k >= 0 and first_at_or_after[k] == i:
                hi[k, :n] = last[:n]
                k -= 1
        # Brackets and weights: a missing side takes the other; none at all gives NaN.
        for k in range(n_tgt):
            for j in range(n):
                before, after = lo[k, j], hi[k, j]
                if before < 0:
                    before = after
                if after < 0:
                    after = before
                if before < 0:
                    lo[k, j] = 0
                    hi[k, j] = 0
                    weight[k, j] = np.nan
                    continue
                i_lo, i_hi = min(before, after), max(before, after)
                lo[k, j] = i_lo
                hi[k, j] = i_hi
                span = times[i_hi] - times[i_lo]
                if span == 0:
                    span = 1.0
                weight[k, j] = (targets[k] - times[i_lo]) / span
        for b in range(n_bands):
            for k in range(n_tgt):
                for j in range(n):
                    v_lo = values[lo[k, j], b, start + j]
                    v_diff = values[hi[k, j], b, start + j] - v_lo
                    v_diff *= weight[k, j]
                    out[b, k, start + j] = v_lo + v_diff


def _days(name: str, days: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Dates as float64 days, 1-D, finite and non-decreasing (searchsorted relies on it)."""
    arr = np.asarray(days, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"gapfill: {name} must be 1-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"gapfill: {name} contains NaN or infinite dates")
    decreasing = np.flatnonzero(np.diff(arr) < 0)
    if decreasing.size:
        bad = int(decreasing[0])
        raise ValueError(
            f"gapfill: {name} must be sorted non-decreasing, but position {bad + 1} "
            f"({arr[bad + 1]!r}) comes before position {bad} ({arr[bad]!r}); sort the "
            "acquisitions (and values and valid with them) by time"
        )
    return arr


def _broadcast_valid(valid: npt.ArrayLike, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Align ``valid`` on time and trailing axes, insert missing middle axes, then broadcast."""
    mask = np.asarray(valid)
    if mask.dtype != np.bool_:
        raise ValueError(
            f"gapfill: valid must be a boolean array (True = usable), got dtype {mask.dtype}; "
            "build it explicitly, e.g. valid = cloud_mask == 0"
        )
    if mask.ndim < 1 or mask.ndim > len(shape) or mask.shape[0] != shape[0]:
        raise ValueError(
            f"gapfill: valid of shape {mask.shape} does not fit values of shape {shape}: "
            "it needs the same time axis first and at most as many axes"
        )
    expanded = mask.reshape(mask.shape[:1] + (1,) * (len(shape) - mask.ndim) + mask.shape[1:])
    try:
        return np.broadcast_to(expanded, shape)
    except ValueError:
        raise ValueError(
            f"gapfill: valid of shape {mask.shape} does not broadcast to values of shape "
            f"{shape}; its trailing axes must match those of values (or be 1)"
        ) from None


def _merge_simultaneous(
    times: npt.NDArray[np.float64], vals: np.ndarray, mask: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], np.ndarray, npt.NDArray[np.bool_], np.ndarray | None]:
    """Merge acquisitions with equal times: mean of the valid ones, valid if any is.

    Returns times, values, mask and the per-pixel count of valid acquisitions before merging
    (None when nothing was merged: the inputs then come back untouched, without a copy).
    """
    unique, starts, sizes = np.unique(times, return_index=True, return_counts=True)
    if unique.shape[0] == times.shape[0]:
        return times, vals, mask, None
    pixel_shape = vals.shape[1:]
    merged_vals = np.empty((unique.shape[0], *pixel_shape), dtype=np.result_type(vals, np.float32))
    merged_mask = np.empty((unique.shape[0], *pixel_shape), dtype=np.bool_)
    count = np.zeros(pixel_shape, dtype=np.uint16)
    for j, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        group = vals[start : start + size]
        group_ok = mask[start : start + size] & np.isfinite(group)
        n_ok = group_ok.sum(axis=0, dtype=np.uint16)
        total = np.where(group_ok, group, 0).sum(axis=0, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            merged_vals[j] = total / n_ok  # NaN where none is valid, masked out anyway
        merged_mask[j] = n_ok > 0
        count += n_ok
    return unique, merged_vals, merged_mask, count
