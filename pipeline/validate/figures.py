"""The report's figures: the confusion matrix, the map quicklook (labels and confidence side by
side) and the value map of a regression, plus the legend helpers the HTML page shares.

Drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``): nothing here touches
pyplot or the global backend. Maps are read decimated (``QUICKLOOK_MAX_PIXELS`` a side), so a
national map draws in the memory of a small one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import ScalarFormatter
from rasterio.enums import Resampling

from pipeline.errors import InputDataError
from pipeline.model import ClassInfo
from pipeline.validate.metrics import ClassificationMetrics

#: Pixels read per side of a map for its quicklook: a panel is 6.5 in at 120 dpi (780 px), so
#: more only costs rendering (a 2048 px map: 1.0 s of savefig at 2000, 0.3 s at 1000).
QUICKLOOK_MAX_PIXELS = 1000

_DPI = 120
_UNKNOWN_COLOR = "#000000"  # map codes that are not in the legend


# --------------------------------------------------------------------------------------------
# legend


def legend_by_code(legend: Sequence[ClassInfo]) -> dict[int, ClassInfo]:
    by_code: dict[int, ClassInfo] = {}
    for info in legend:
        code = int(info.code)
        if code in by_code:
            raise InputDataError(
                f"the legend lists class code {code} twice ({by_code[code].name!r} and "
                f"{info.name!r})",
                fix="give each class code one legend entry",
                field="legend",
            )
        try:
            color = mcolors.to_hex(info.color)
        except ValueError:
            raise InputDataError(
                f"class {code} ({info.name!r}) has colour {info.color!r}, which is not a colour",
                fix="use a hex colour such as '#1f78b4' or a matplotlib colour name",
                field="legend",
            ) from None
        by_code[code] = ClassInfo(code=code, name=str(info.name), color=color)
    return by_code


def class_name(code: int, legend: Mapping[int, ClassInfo]) -> str:
    return legend[code].name if code in legend else f"class {code}"


def fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------
# confusion matrix figure


def _row_normalized(confusion: np.ndarray) -> np.ndarray:
    rows = confusion.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rows > 0, confusion / rows, 0.0)


def render_confusion(
    path: Path, metrics: ClassificationMetrics, legend: Mapping[int, ClassInfo], title: str
) -> None:
    k = len(metrics.classes)
    names = [class_name(c, legend) for c in metrics.classes]
    shares = _row_normalized(metrics.confusion)

    side = min(24.0, max(5.5, 0.55 * k + 3.5))
    fig = Figure(figsize=(side + 1.2, side), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("share of the reference class (row-normalized)")

    font = max(5.0, min(10.0, 220.0 / max(k, 1)))
    for i in range(k):
        for j in range(k):
            count = int(metrics.confusion[i, j])
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if shares[i, j] > 0.5 else "black",
                fontweight="bold" if i == j else "normal",
            )
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.tick_params(labelsize=max(6.0, min(10.0, 260.0 / max(k, 1))))
    ax.set_xlabel("map (predicted)")
    ax.set_ylabel("reference")
    ax.set_title(
        f"{title}\nOA = {fmt(metrics.overall_accuracy)}, κ = {fmt(metrics.kappa)}, "
        f"n = {metrics.n_samples}",
        fontsize=11,
    )
    fig.savefig(path, format="png", dpi=_DPI, facecolor="white")


# --------------------------------------------------------------------------------------------
# map quicklook


def _decimated_shape(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """The read shape that keeps both sides at most ``max_pixels``, with one factor for both."""
    factor = max(1, math.ceil(max(height, width) / max_pixels))
    return (max(1, math.ceil(height / factor)), max(1, math.ceil(width / factor)))


def _read_band(
    path: Path, shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, Any, tuple[float, float, float, float], float | None]:
    """Band 1 of ``path`` (decimated, nearest) with its CRS, bounds and nodata value."""
    from pipeline.predict.outputs import open_map

    with open_map(path, "raster") as src:
        out_shape = shape or _decimated_shape(src.height, src.width, QUICKLOOK_MAX_PIXELS)
        data = src.read(1, out_shape=out_shape, resampling=Resampling.nearest)
        bounds = (src.bounds.left, src.bounds.bottom, src.bounds.right, src.bounds.top)
        return data, src.crs, bounds, src.nodata


def _crs_label(crs: Any) -> str:
    """``EPSG:32631 — WGS 84 / UTM zone 31N``, or the CRS string when it has no EPSG code."""
    if crs is None:
        return "no CRS (pixel coordinates)"
    epsg = crs.to_epsg()
    code = f"EPSG:{epsg}" if epsg is not None else str(crs.to_string())
    try:
        name = pyproj.CRS.from_wkt(crs.to_wkt()).name
    except pyproj.exceptions.CRSError:
        return code
    return f"{code} — {name}" if name and name != code else code


def _axis_labels(crs: Any) -> tuple[str, str]:
    if crs is None:
        return ("column", "row")
    if crs.is_geographic:
        return ("longitude (°)", "latitude (°)")
    units = crs.linear_units or ""
    suffix = f" ({'m' if units in ('metre', 'meter') else units})" if units else ""
    return (f"x{suffix}", f"y{suffix}")


def _plain_coordinates(ax: Any) -> None:
    for axis in (ax.xaxis, ax.yaxis):
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        axis.set_major_formatter(formatter)
    ax.tick_params(axis="x", labelrotation=30)
    ax.tick_params(labelsize=8)


def _confidence_percent(data: np.ndarray, nodata: float | None) -> np.ma.MaskedArray:
    """Confidence in percent: integer maps are 0-100 already, float maps 0-1 are scaled."""
    values = data.astype(np.float64)
    invalid = ~np.isfinite(values)
    if nodata is not None and not math.isnan(nodata):
        invalid |= data == nodata
    elif nodata is not None:
        invalid |= np.isnan(values)
    if data.dtype.kind == "f":
        valid = values[~invalid]
        # A float map holds 0-1 probabilities; one that goes above 1 was written in percent.
        if valid.size == 0 or float(valid.max()) <= 1.0 + 1e-6:
            values = values * 100.0
    return np.ma.masked_array(values, mask=invalid)


def render_quicklook(
    path: Path,
    label_map: Path,
    confidence_map: Path | None,
    legend: Mapping[int, ClassInfo],
    title: str,
) -> None:
    labels, crs, bounds, nodata = _read_band(label_map)
    left, bottom, right, top = bounds
    extent = (left, right, bottom, top)

    mask = np.zeros(labels.shape, dtype=bool)
    if nodata is not None:
        mask = np.isnan(labels) if math.isnan(nodata) else labels == nodata
    unknown = [int(c) for c in np.unique(labels[~mask]) if int(c) not in legend]

    codes = sorted(legend)
    colours = [legend[c].color for c in codes]
    index = np.full(labels.shape, len(codes), dtype=np.int32)  # unknown codes -> last colour
    for i, code in enumerate(codes):
        index[labels == code] = i
    # nodata: transparent, on a white figure
    cmap = mcolors.ListedColormap([*colours, _UNKNOWN_COLOR]).with_extremes(
        bad=(1.0, 1.0, 1.0, 0.0)
    )
    shown = np.ma.masked_array(index, mask=mask)

    panels = 2 if confidence_map is not None else 1
    # Size the figure to the map's aspect ratio so the panels fill it.
    map_width = abs(right - left) or 1.0
    map_height = abs(top - bottom) or 1.0
    panel_width = 6.5
    panel_height = min(9.0, max(2.5, panel_width * map_height / map_width))
    fig = Figure(
        figsize=(panel_width * panels + 0.6, panel_height + 2.8),
        dpi=_DPI,
        layout="constrained",
        facecolor="white",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    xlabel, ylabel = _axis_labels(crs)

    ax = axes[0]
    ax.imshow(
        shown,
        cmap=cmap,
        vmin=-0.5,
        vmax=len(codes) + 0.5,
        extent=extent,
        interpolation="nearest",
    )
    ax.set_title("land-cover map", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _plain_coordinates(ax)

    handles = [
        Patch(facecolor=legend[c].color, edgecolor="0.3", label=f"{c} {legend[c].name}")
        for c in codes
    ]
    if unknown:
        handles.append(
            Patch(
                facecolor=_UNKNOWN_COLOR,
                edgecolor="0.3",
                label=f"not in legend: {', '.join(map(str, unknown[:10]))}",
            )
        )
    if nodata is not None:
        handles.append(Patch(facecolor="white", edgecolor="0.3", label=f"no data ({nodata:g})"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(4, max(1, len(handles))),
        fontsize=8,
        frameon=False,
    )

    if confidence_map is not None:
        conf_data, _, conf_bounds, conf_nodata = _read_band(confidence_map)
        confidence = _confidence_percent(conf_data, conf_nodata)
        if confidence.shape == mask.shape:
            confidence = np.ma.masked_array(confidence, mask=confidence.mask | mask)
        c_left, c_bottom, c_right, c_top = conf_bounds
        cax = axes[1]
        conf_cmap = colormaps["viridis"].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
        image = cax.imshow(
            confidence,
            cmap=conf_cmap,
            vmin=0.0,
            vmax=100.0,
            extent=(c_left, c_right, c_bottom, c_top),
            interpolation="nearest",
        )
        # on the figure's right, for both panels: the two maps keep the same size, side by side
        colorbar = fig.colorbar(
            image, ax=list(axes), location="right", fraction=0.03, aspect=25, shrink=0.7
        )
        colorbar.set_label("confidence (%)")
        cax.set_title("confidence", fontsize=10)
        cax.set_xlabel(xlabel)
        cax.set_ylabel(ylabel)
        cax.sharex(ax)  # the same extent and ticks: the panels line up pixel for pixel
        cax.sharey(ax)
        _plain_coordinates(cax)

    # A map's title: what it shows and of which run (the report's title is about accuracy).
    run = title.split(":", 1)[0].removeprefix("sitsflow run ").strip()
    shows = "Land-cover map" + (" and its confidence" if panels == 2 else "")
    fig.suptitle(f"{shows}: {run}\n{_crs_label(crs)}", fontsize=11)
    fig.savefig(path, format="png", dpi=_DPI, facecolor="white")


def render_value_quicklook(path: Path, value_map: Path, title: str, units: str) -> None:
    data, crs, bounds, nodata = _read_band(value_map)
    values = data.astype(np.float64)
    invalid = ~np.isfinite(values)
    if nodata is not None and not math.isnan(nodata):
        invalid |= data == nodata
    shown = np.ma.masked_array(values, mask=invalid)
    valid = values[~invalid]
    low, high = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    left, bottom, right, top = bounds
    ratio = abs(top - bottom) / (abs(right - left) or 1.0)
    fig = Figure(
        figsize=(7.0, min(9.0, max(3.0, 6.5 * ratio)) + 1.8),
        dpi=_DPI,
        layout="constrained",
        facecolor="white",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
    image = ax.imshow(
        shown,
        cmap=cmap,
        vmin=low,
        vmax=high,
        extent=(left, right, bottom, top),
        interpolation="nearest",
    )
    bar = fig.colorbar(
        image, ax=ax, orientation="horizontal", fraction=0.05, aspect=40, extend="both"
    )
    bar.set_label(f"predicted value{f' ({units})' if units else ''}, 2nd-98th percentile stretch")
    xlabel, ylabel = _axis_labels(crs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _plain_coordinates(ax)
    fig.suptitle(f"{title}\n{_crs_label(crs)}", fontsize=11)
    fig.savefig(path, format="png", dpi=_DPI, facecolor="white")
