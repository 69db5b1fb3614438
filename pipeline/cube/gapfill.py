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

How it stays fast on (T=70, B=10, 256, 256) chunks: no per-pixel Python loop, and the only
(T, pixels) array is one byte per value (valid and finite). Pixels are processed in blocks that
fit the CPU cache; in each block a backward pass over the acquisitions records, per target date,
the first valid acquisition at or after it (a running minimum of indices), then a forward pass
tracks the last valid one at or before (a running maximum) and fills each target as soon as it
is reached, with two gathers into the values. Memory beyond the inputs: the bool array, the
(D, pixels) float32 output and small per-block temporaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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

    # Usable = valid and finite, one byte per acquisition and pixel, pixels on one flat axis.
    usable = np.empty((n, n_pix), dtype=np.bool_)
    for i in range(n):
        row = usable[i].reshape(pixel_shape)
        np.copyto(row, mask[i])
        if np.issubdtype(vals.dtype, np.floating):
            row &= np.isfinite(vals[i])
    count = usable.sum(axis=0, dtype=np.uint16) if merged_count is None else merged_count
    flat = np.ascontiguousarray(vals).reshape(-1)  # acquisition i, pixel p at i * n_pix + p

    plan = _make_plan(times, tgt, n_pix, n_pix, vals.dtype)
    out = np.empty((n_tgt, n_pix), dtype=np.float32)
    # Pixel blocks small enough for every temporary to stay in the CPU cache.
    for start in range(0, n_pix, _BLOCK):
        stop = min(start + _BLOCK, n_pix)
        _fill_block(plan, usable[:, start:stop], [flat], start, [out[:, start:stop]])
    return GapFilled(
        values=out.reshape(n_tgt, *pixel_shape), valid_count=count.reshape(pixel_shape)
    )


def gapfill_bands(
    values: npt.ArrayLike,
    valid: npt.ArrayLike,
    acquisition_days: npt.ArrayLike,
    target_days: npt.ArrayLike,
) -> GapFilled:
    """Gap-fill several bands that share one validity mask, finding the brackets once.

    values: (T, B, *pixel_shape); valid: (T, *pixel_shape) boolean. An acquisition is usable at
    a pixel where it is valid and every band is finite there (one cloud mask for all bands, as
    a sensor's quality layer gives). The result's values are band first, (B, D, *pixel_shape)
    (each band's series contiguous, as the cube stores it), and equal
    ``gapfill(values, usable[:, None], ...).values.swapaxes(0, 1)`` with that combined mask, at
    about 1/B of the cost of the bracket search. Integer inputs of 16 bits or less are worked
    on in float32 (exact).
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
    if np.unique(acq).shape[0] != n_time:
        # Simultaneous acquisitions are merged band by band: the general path does that.
        usable = mask & np.isfinite(vals).all(axis=1) if vals.dtype.kind == "f" else mask
        filled = gapfill(vals, usable[:, None], acq, tgt)
        return GapFilled(np.ascontiguousarray(filled.values.swapaxes(0, 1)), filled.valid_count)
    n_pix = math.prod(pixel_shape)
    usable_all = np.empty((n_time, n_pix), dtype=np.bool_)
    for i in range(n_time):
        row = usable_all[i].reshape(pixel_shape)
        np.copyto(row, mask[i])
        if vals.dtype.kind == "f":
            for b in range(n_bands):
                row &= np.isfinite(vals[i, b])
    count = usable_all.sum(axis=0, dtype=np.uint16)
    n_tgt = tgt.shape[0]
    if n_time == 0:
        empty = np.full((n_bands, n_tgt, *pixel_shape), np.nan, dtype=np.float32)
        return GapFilled(values=empty, valid_count=count.reshape(pixel_shape))
    flat = np.ascontiguousarray(vals).reshape(-1)  # (i, b, p) at (i * B + b) * n_pix + p
    plan = _make_plan(acq, tgt, n_pix, n_bands * n_pix, vals.dtype)
    out = np.empty((n_bands, n_tgt, n_pix), dtype=np.float32)
    flats = [flat[b * n_pix :] for b in range(n_bands)]
    for start in range(0, n_pix, _BLOCK):
        stop = min(start + _BLOCK, n_pix)
        outs = [out[b, :, start:stop] for b in range(n_bands)]
        _fill_block(plan, usable_all[:, start:stop], flats, start, outs)
    return GapFilled(
        values=out.reshape(n_bands, n_tgt, *pixel_shape), valid_count=count.reshape(pixel_shape)
    )


def _make_plan(
    times: npt.NDArray[np.float64],
    tgt: npt.NDArray[np.float64],
    n_pix: int,
    stride: int,
    dtype: np.dtype[Any],
) -> _Plan:
    exact_in_float32 = (dtype.kind == "f" and dtype.itemsize <= 4) or (
        dtype.kind in "iu" and dtype.itemsize <= 2
    )
    return _Plan(
        n=times.shape[0],
        n_pix=n_pix,
        stride=stride,
        times=np.append(times, np.nan),  # index n: no valid acquisition at all
        targets=tgt,
        last_at_or_before=np.searchsorted(times, tgt, side="right") - 1,
        first_at_or_after=np.searchsorted(times, tgt, side="left"),
        work_dtype=np.dtype(np.float32 if exact_in_float32 else np.float64),
    )


_BLOCK = 8192


@dataclass(frozen=True)
class _Plan:
    """What every pixel block shares: sizes, dates, bracketing acquisition positions."""

    n: int
    n_pix: int
    stride: int
    """Distance in ``flat`` between two acquisitions of one pixel."""
    times: npt.NDArray[np.float64]
    targets: npt.NDArray[np.float64]
    last_at_or_before: npt.NDArray[np.intp]
    first_at_or_after: npt.NDArray[np.intp]
    work_dtype: np.dtype[np.floating]
    """float32 for float32 or smaller input and 16-bit integers (exact in float32; the output
    is float32 anyway), else float64: wider integers and float64 would be rounded."""


def _fill_block(
    plan: _Plan,
    usable: npt.NDArray[np.bool_],
    flats: list[np.ndarray],
    start: int,
    outs: list[npt.NDArray[np.float32]],
) -> None:
    """Gap-fill pixels start .. start + usable.shape[1] of each band into ``outs`` (D, block).

    Every band shares ``usable``, so the brackets and weights are found once and applied to
    each ``flats[b]`` (acquisition i, pixel p at ``i * plan.stride + p``).

    Per pixel, "last usable acquisition at or before" and "first usable at or after" are
    tracked as a running max / min of ``usable * (i + 1) - 1`` (the index, or -1 for none):
    much cheaper than masked assignment. Read as unsigned, the same -1 is the largest value,
    so one reinterpretation serves both the min and the max below without any np.where.
    """
    n = plan.n
    n_tgt, width = outs[0].shape
    small = n < np.iinfo(np.int16).max
    signed, unsigned = (np.int16, np.uint16) if small else (np.int32, np.uint32)
    step = np.empty(width, dtype=signed)

    running = np.full(width, -1, dtype=signed).view(unsigned)  # -1 = none, the largest
    after = np.full((n_tgt, width), -1, dtype=signed).view(unsigned)
    k = n_tgt - 1
    while k >= 0 and plan.first_at_or_after[k] >= n:
        k -= 1  # targets after the last acquisition: nothing at or after them
    for i in range(n - 1, -1, -1):
        np.multiply(usable[i], signed(i + 1), out=step)
        np.subtract(step, 1, out=step)
        np.minimum(running, step.view(unsigned), out=running)
        while k >= 0 and plan.first_at_or_after[k] == i:
            after[k] = running
            k -= 1

    # Forward pass: the last usable acquisition at or before each target.
    before = np.full(width, -1, dtype=signed)
    before_at = np.empty((n_tgt, width), dtype=signed)
    k = 0
    for i in range(-1, n):
        if i >= 0:
            np.multiply(usable[i], signed(i + 1), out=step)
            np.subtract(step, 1, out=step)
            np.maximum(before, step, out=before)
        while k < n_tgt and plan.last_at_or_before[k] == i:
            before_at[k] = before
            k += 1

    # All targets at once (few large numpy calls rather than many small ones). A missing side
    # takes the other one (the end-holding rule): "none" is the largest unsigned value for the
    # minimum, and -1 for the maximum. Where both are missing, lo clips to the NaN time at
    # index n and the result is NaN.
    lo = np.minimum(before_at.view(unsigned), after).astype(np.intp)
    hi = np.maximum(before_at, after.view(signed)).astype(np.intp)
    t_lo = plan.times.take(lo, mode="clip")
    span = plan.times.take(hi, mode="clip")
    span -= t_lo
    span += span == 0  # lo == hi: the weight stays finite and multiplies exactly 0
    weight = plan.targets[:, None] - t_lo
    weight /= span
    weight = weight.astype(plan.work_dtype, copy=False)
    cols = np.arange(start, start + width)
    lo *= plan.stride
    lo += cols
    hi *= plan.stride
    hi += cols
    for flat, out in zip(flats, outs, strict=True):
        v_lo = flat.take(lo, mode="clip").astype(plan.work_dtype, copy=False)
        v_diff = flat.take(hi, mode="clip").astype(plan.work_dtype, copy=False)
        v_diff -= v_lo
        v_diff *= weight
        np.add(v_lo, v_diff, out=out, casting="unsafe")


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
