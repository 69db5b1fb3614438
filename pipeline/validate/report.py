"""The accuracy report of a run: metrics.json, two figures and a self-contained HTML page.

``write_report`` renders all four files to temporary names first and renames them into place
only once every one of them is complete, so a failure anywhere (an unreadable map, a detail
that is not JSON-serializable, a full disk) leaves ``out_dir`` as it was: no partial files, and
a previous report, if any, untouched.

Figures are drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``): nothing here
touches pyplot or the global backend, so importing this module changes nothing elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from pipeline.model import ClassInfo
from pipeline.storage import atomic_path
from pipeline.validate.aggregate import Interval, RunsSummary
from pipeline.validate.area import AreaEstimates, Estimate
from pipeline.validate.figures import (
    QUICKLOOK_MAX_PIXELS,
    class_name,
    fmt,
    legend_by_code,
    render_confusion,
    render_quicklook,
    render_value_quicklook,
)
from pipeline.validate.mapped_area import AreaAssessment
from pipeline.validate.metrics import ClassificationMetrics
from pipeline.validate.regression import RegressionMetrics, render_scatter

__all__ = [
    "CONFUSION_PNG",
    "HTML",
    "METRICS_JSON",
    "QUICKLOOK_MAX_PIXELS",
    "QUICKLOOK_PNG",
    "SCATTER_PNG",
    "RegressionReportFiles",
    "ReportFiles",
    "write_regression_report",
    "write_report",
]

METRICS_JSON = "metrics.json"
HTML = "report.html"
CONFUSION_PNG = "confusion_matrix.png"
QUICKLOOK_PNG = "map_quicklook.png"
SCATTER_PNG = "scatter.png"


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """Where :func:`write_report` put each file."""

    metrics_json: Path
    html: Path
    confusion_png: Path
    quicklook_png: Path


# --------------------------------------------------------------------------------------------
# JSON


def _jsonable(value: Any, where: str = "details") -> Any:
    """``value`` as plain JSON types: numpy scalars and arrays, dates, paths converted."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), where)
    raise TypeError(
        f"{where} is a {type(value).__name__}, which cannot be written to metrics.json; "
        "pass numbers, strings, dates, lists or dicts"
    )


def _metrics_json(
    metrics: ClassificationMetrics,
    legend: Mapping[int, ClassInfo],
    title: str,
    details: Mapping[str, Any],
    area: AreaEstimates | AreaAssessment | None = None,
    runs: RunsSummary | None = None,
    skipped: Sequence[Mapping[str, str]] = (),
) -> str:
    document = metrics.to_dict()
    if area is not None:
        document["area_estimates"] = area.to_dict()
    if runs is not None:
        document["across_runs"] = runs.to_dict()
    if skipped:
        document["skipped_items"] = [dict(s) for s in skipped]
    document["legend"] = {
        str(code): {"name": info.name, "color": info.color} for code, info in legend.items()
    }
    document["details"] = _jsonable(dict(details))
    document["title"] = title
    return json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------------
# HTML


def _pct(value: float) -> str:
    return "" if value is None or math.isnan(value) else f" ({100.0 * value:.2f} %)"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.diag { background: #dbe9f6; font-weight: bold; }
td.total, th.total { background: #f8f8f8; }
.summary { display: flex; gap: 1.2em; flex-wrap: wrap; margin: 0.8em 0; }
.score { border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 1em; min-width: 9em; }
.score .label { font-size: 0.85em; color: #555; }
.score .value { font-size: 1.5em; font-weight: bold; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #555;
          vertical-align: middle; margin-right: 0.3em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #666; font-size: 0.85em; }
.caveat { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.4em 0.8em;
          font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _detail_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "n/a" if value is None else str(value)


def _detail_cell(value: Any) -> str:
    """A detail as HTML: a mapping of plain values (e.g. stage seconds) as a small table in its
    own order, anything else as escaped text."""
    if (
        isinstance(value, dict)
        and value
        and not any(isinstance(v, dict | list) for v in value.values())
    ):
        rows = "".join(
            f"<tr><th>{_e(str(k))}</th><td>{_e(_detail_value(v))}</td></tr>"
            for k, v in value.items()
        )
        return f'<table class="inner">{rows}</table>'
    return _e(_detail_value(value))


def _ci(estimate: Estimate | Interval, digits: int = 4, scale: float = 1.0) -> str:
    """``value ± half-width`` (``n/a`` parts where undefined)."""
    value = estimate.value if isinstance(estimate, Estimate) else estimate.mean
    half = estimate.half_width
    if value is None or math.isnan(value):
        return "n/a"
    text = f"{value * scale:.{digits}f}"
    if not math.isnan(half):
        text += f" ± {half * scale:.{digits}f}"
    return text


def _area_html(area: AreaEstimates | AreaAssessment, legend: Mapping[int, ClassInfo]) -> list[str]:
    assessment = area if isinstance(area, AreaAssessment) else None
    estimates = area.estimates if isinstance(area, AreaAssessment) else area
    level = f"{100 * estimates.confidence:g}%"
    if assessment is None:
        note = (
            f'<p class="note">Stratified estimators with map classes as strata; ± is the {level} '
            "confidence half-width. Areas are in the unit of the mapped areas. These estimators "
            "assume the validation pixels are a random sample inside each map class; pixels taken "
            "from reference polygons are clustered, so read the intervals as indicative.</p>"
        )
        unit = ""
    else:
        unit = f" ({assessment.unit})"
        note = (
            f'<p class="note">Stratified estimators with map classes as strata; ± is the {level} '
            f"confidence half-width. Areas are in {_e(assessment.unit)}, from the label map's "
            f"{sum(assessment.mapped.pixels.values())} mapped pixels and "
            f"{assessment.n_samples} validation pixels.</p>"
        )
        if assessment.intervals_are_indicative:
            note += (
                '<p class="caveat"><b>The intervals are indicative.</b> '
                f"{_e(assessment.caveat or '')}</p>"
            )
        else:
            note += (
                '<p class="note">The validation pixels were declared a stratified random sample '
                "of the map classes: the intervals are design-based.</p>"
            )
    out = [
        "<h2>Area-weighted accuracy and class areas (Olofsson et al. 2014)</h2>",
        note,
        f"<p>Overall accuracy: <b>{_e(_ci(estimates.overall_accuracy))}</b></p>",
        "<table>",
        f"<tr><th>code</th><th>class</th><th>mapped area{_e(unit)}</th>"
        "<th>samples mapped as it</th>"
        f"<th>estimated area{_e(unit)} ± {level} CI</th><th>area share ± CI</th>"
        "<th>user's accuracy ± CI</th><th>producer's accuracy ± CI</th></tr>",
    ]
    for c in estimates.classes:
        out.append(
            f'<tr><td class="num">{c}</td><td>{_e(class_name(c, legend))}</td>'
            f'<td class="num">{estimates.mapped_area.get(c, 0.0):.6g}</td>'
            f'<td class="num">{estimates.samples.get(c, 0)}</td>'
            f'<td class="num">{_e(_ci(estimates.area[c], 1))}</td>'
            f'<td class="num">{_e(_ci(estimates.area_proportion[c]))}</td>'
            f'<td class="num">{_e(_ci(estimates.users_accuracy[c]))}</td>'
            f'<td class="num">{_e(_ci(estimates.producers_accuracy[c]))}</td></tr>'
        )
    out.append("</table>")
    if estimates.unassessed_classes:
        out.append(
            f'<p class="note">Map class(es) {_e(list(estimates.unassessed_classes))} hold no '
            f"validation sample: their mapped area ({estimates.unassessed_area:.6g}) is left out "
            "of the estimates.</p>"
        )
    return out


def _runs_html(runs: RunsSummary, legend: Mapping[int, ClassInfo]) -> list[str]:
    level = f"{100 * runs.confidence:g}%"
    out = [
        f"<h2>Across {runs.n_runs} runs</h2>",
        f'<p class="note">Mean ± {level} Student-t half-width over runs with seeds '
        f"{_e(list(runs.seeds))} (each run re-splits, re-selects and re-trains); n is the number "
        "of runs where the score is defined.</p>",
        "<table><tr><th>score</th><th>mean ± CI</th><th>std</th><th>n</th></tr>",
    ]
    for name, interval in runs.overall.items():
        out.append(
            f"<tr><th>{_e(name.replace('_', ' '))}</th>"
            f'<td class="num">{_e(_ci(interval))}</td>'
            f'<td class="num">{_e(fmt(interval.std))}</td>'
            f'<td class="num">{interval.n}</td></tr>'
        )
    out.append("</table>")
    if runs.per_class:
        names = list(runs.per_class)
        classes = sorted({c for v in runs.per_class.values() for c in v})
        header = "".join(f"<th>{_e(n)} (mean ± CI)</th>" for n in names)
        out.append(f"<table><tr><th>code</th><th>class</th>{header}</tr>")
        for c in classes:
            shown = [_ci(runs.per_class[n][c]) if c in runs.per_class[n] else "n/a" for n in names]
            cells = "".join(f'<td class="num">{_e(s)}</td>' for s in shown)
            out.append(
                f'<tr><td class="num">{c}</td><td>{_e(class_name(c, legend))}</td>{cells}</tr>'
            )
        out.append("</table>")
    return out


def _skipped_html(skipped: Sequence[Mapping[str, str]]) -> list[str]:
    """The catalog items the run left out (``on_bad_item: skip``), each with why."""
    if not skipped:
        return []
    out = [
        "<h2>Items left out</h2>",
        f'<p class="caveat">{len(skipped)} catalog item(s) were left out of the run '
        "(<code>on_bad_item: skip</code>): their dates are gap-filled from the others.</p>",
        "<table><tr><th>item</th><th>sensor</th><th>why</th></tr>",
    ]
    for entry in skipped:
        cells = (entry.get("item", ""), entry.get("sensor", ""), entry.get("problem", ""))
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return out


def _render_html(
    metrics: ClassificationMetrics,
    legend: Mapping[int, ClassInfo],
    title: str,
    details: Mapping[str, Any],
    area: AreaEstimates | AreaAssessment | None = None,
    runs: RunsSummary | None = None,
    skipped: Sequence[Mapping[str, str]] = (),
) -> str:
    classes = metrics.classes
    names = {c: class_name(c, legend) for c in classes}
    out: list[str] = []
    add = out.append
    add("<!DOCTYPE html>")
    add('<html lang="en">')
    add('<head><meta charset="utf-8">')
    add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    add(f"<title>{_e(title)}</title>")
    add(f"<style>{_CSS}</style></head>")
    add("<body>")
    add(f"<h1>{_e(title)}</h1>")
    add('<p class="note">Accuracy report written by sitsflow.</p>')

    add("<h2>Run</h2>")
    if details:
        add("<table>")
        for key in sorted(details):
            add(f"<tr><th>{_e(key)}</th><td>{_detail_cell(details[key])}</td></tr>")
        add("</table>")
    else:
        add('<p class="note">No details given.</p>')
    out.extend(_skipped_html(skipped))

    add("<h2>Overall</h2>")
    add('<div class="summary">')
    for label, value, extra in (
        ("Overall accuracy", metrics.overall_accuracy, _pct(metrics.overall_accuracy)),
        ("Cohen's kappa", metrics.kappa, ""),
        ("Macro F1", metrics.macro_f1, ""),
    ):
        add(
            f'<div class="score"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(fmt(value))}</div>'
            f'<div class="label">{_e(extra.strip())}</div></div>'
        )
    add(
        f'<div class="score"><div class="label">Validation samples</div>'
        f'<div class="value">{metrics.n_samples}</div></div>'
    )
    add("</div>")

    add("<h2>Per class</h2>")
    add("<table>")
    add(
        "<tr><th>code</th><th>class</th><th>support (reference)</th>"
        "<th>precision (user's accuracy)</th><th>recall (producer's accuracy)</th>"
        "<th>F1</th></tr>"
    )
    for c in classes:
        colour = legend[c].color if c in legend else "#ffffff"
        add(
            f'<tr><td class="num">{c}</td>'
            f'<td><span class="swatch" style="background:{_e(colour)}"></span>{_e(names[c])}</td>'
            f'<td class="num">{metrics.support[c]}</td>'
            f'<td class="num">{_e(fmt(metrics.precision[c]))}</td>'
            f'<td class="num">{_e(fmt(metrics.recall[c]))}</td>'
            f'<td class="num">{_e(fmt(metrics.f1[c]))}</td></tr>'
        )
    add("</table>")
    add(
        '<p class="note">n/a: undefined — precision of a class the map never predicts, recall of '
        "a class absent from the reference. Macro F1 averages the defined F1 scores.</p>"
    )

    if area is not None:
        out.extend(_area_html(area, legend))
    if runs is not None:
        out.extend(_runs_html(runs, legend))

    add("<h2>Confusion matrix</h2>")
    add('<p class="note">Rows: reference; columns: map. Counts of validation samples.</p>')
    add("<table>")
    header = "".join(f"<th>{_e(names[c])}</th>" for c in classes)
    add(f'<tr><th>reference \\ map</th>{header}<th class="total">total</th></tr>')
    col_totals = metrics.confusion.sum(axis=0)
    for i, c in enumerate(classes):
        cells = "".join(
            f'<td class="num{" diag" if i == j else ""}">{int(metrics.confusion[i, j])}</td>'
            for j in range(len(classes))
        )
        total = int(metrics.confusion[i].sum())
        add(f'<tr><th>{_e(names[c])}</th>{cells}<td class="num total">{total}</td></tr>')
    totals = "".join(f'<td class="num total">{int(t)}</td>' for t in col_totals)
    add(
        f'<tr><th class="total">total</th>{totals}'
        f'<td class="num total">{metrics.n_samples}</td></tr>'
    )
    add("</table>")
    add(f'<p><img src="{CONFUSION_PNG}" alt="confusion matrix"></p>')

    add("<h2>Map</h2>")
    add(f'<p><img src="{QUICKLOOK_PNG}" alt="quicklook of the land-cover map"></p>')
    add("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------


def write_report(
    out_dir: Path,
    metrics: ClassificationMetrics,
    legend: Sequence[ClassInfo],
    label_map: Path,
    confidence_map: Path | None,
    *,
    title: str,
    details: Mapping[str, Any],
    area: AreaEstimates | AreaAssessment | None = None,
    runs: RunsSummary | None = None,
    skipped: Sequence[Mapping[str, str]] = (),
) -> ReportFiles:
    """Write metrics.json, confusion_matrix.png, map_quicklook.png and report.html to ``out_dir``.

    ``legend`` names and colours the classes (codes of ``metrics`` missing from it are shown as
    "class <code>"). ``label_map`` is the single-band label GeoTIFF/COG, whose nodata value
    marks unmapped pixels; ``confidence_map`` (optional) is 0-100 integers or 0-1 floats.
    ``details`` is free run information for the JSON and the page; numpy scalars and arrays,
    dates and paths are converted, anything else that JSON cannot hold raises ``TypeError``.

    ``area`` (optional, :func:`pipeline.validate.area.area_estimates`, or
    :func:`pipeline.validate.mapped_area.assess_map_area` for estimates from the label map
    with its area unit and sampling caveat) adds the area-weighted accuracy and class areas
    with their intervals; ``runs`` (optional,
    :mod:`pipeline.validate.aggregate`) adds the mean and interval of the scores across runs.
    Both go to the page and to metrics.json (keys ``area_estimates`` and ``across_runs``), as
    do ``skipped``, the catalog items the run left out (``item``, ``sensor``, ``problem``: key
    ``skipped_items``).

    All four files are complete before any of them is renamed into place, so a failure leaves
    ``out_dir`` without partial files (and a previous report there unchanged).
    """
    out_dir = Path(out_dir)
    label_map = Path(label_map)
    confidence_map = Path(confidence_map) if confidence_map is not None else None
    by_code = legend_by_code(legend)
    files = ReportFiles(
        metrics_json=out_dir / METRICS_JSON,
        html=out_dir / HTML,
        confusion_png=out_dir / CONFUSION_PNG,
        quicklook_png=out_dir / QUICKLOOK_PNG,
    )
    # Cheap, failure-prone work first, before anything touches out_dir.
    json_text = _metrics_json(metrics, by_code, title, details, area, runs, skipped)
    html_text = _render_html(metrics, by_code, title, _jsonable(dict(details)), area, runs, skipped)

    with contextlib.ExitStack() as stack:
        # Entered first, renamed last: the page appears only once its images are in place.
        html_tmp = stack.enter_context(atomic_path(files.html))
        json_tmp = stack.enter_context(atomic_path(files.metrics_json))
        confusion_tmp = stack.enter_context(atomic_path(files.confusion_png))
        quicklook_tmp = stack.enter_context(atomic_path(files.quicklook_png))
        render_confusion(confusion_tmp, metrics, by_code, title)
        render_quicklook(quicklook_tmp, label_map, confidence_map, by_code, title)
        json_tmp.write_text(json_text, encoding="utf-8")
        html_tmp.write_text(html_text, encoding="utf-8")
        # Leaving the block renames the four temporaries into place; an exception anywhere
        # above removes them all instead.
    return files


# --------------------------------------------------------------------------------------------
# regression


@dataclasses.dataclass(frozen=True)
class RegressionReportFiles:
    """Where :func:`write_regression_report` put each file."""

    metrics_json: Path
    html: Path
    scatter_png: Path
    quicklook_png: Path


def _regression_html(
    metrics: RegressionMetrics,
    title: str,
    details: Mapping[str, Any],
    runs: RunsSummary | None,
    skipped: Sequence[Mapping[str, str]] = (),
) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        '<p class="note">Accuracy report written by sitsflow (regression).</p>',
        "<h2>Run</h2>",
    ]
    if details:
        out.append("<table>")
        for key in sorted(details):
            out.append(f"<tr><th>{_e(key)}</th><td>{_detail_cell(details[key])}</td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="note">No details given.</p>')
    out.extend(_skipped_html(skipped))
    out.append("<h2>Scores</h2>")
    out.append('<div class="summary">')
    for label, value in (
        ("RMSE", metrics.rmse),
        ("MAE", metrics.mae),
        ("bias (map − reference)", metrics.bias),
        ("R²", metrics.r2),
        ("Pearson's r", metrics.pearson_r),
    ):
        out.append(
            f'<div class="score"><div class="label">{_e(label)}</div>'
            f'<div class="value">{_e(fmt(value))}</div></div>'
        )
    out.append(
        f'<div class="score"><div class="label">Validation samples</div>'
        f'<div class="value">{metrics.n_samples}</div></div>'
    )
    out.append("</div>")
    if runs is not None:
        out.extend(_runs_html(runs, {}))
    out.append("<h2>Map against reference</h2>")
    out.append(f'<p><img src="{SCATTER_PNG}" alt="predicted against reference values"></p>')
    out.append("<h2>Map</h2>")
    out.append(f'<p><img src="{QUICKLOOK_PNG}" alt="quicklook of the predicted map"></p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_regression_report(
    out_dir: Path,
    reference: np.ndarray | Sequence[float],
    predicted: np.ndarray | Sequence[float],
    value_map: Path,
    *,
    title: str,
    details: Mapping[str, Any],
    units: str = "",
    runs: RunsSummary | None = None,
    skipped: Sequence[Mapping[str, str]] = (),
) -> tuple[RegressionReportFiles, RegressionMetrics]:
    """Score a regression map and write metrics.json, scatter.png, map_quicklook.png and
    report.html to ``out_dir``, all or nothing (as :func:`write_report`).

    ``reference``/``predicted`` are the validation samples' values; ``value_map`` is the
    single-band map (its nodata value marks unmapped pixels); ``runs`` adds the across-run
    intervals; ``skipped`` lists the catalog items left out (as :func:`write_report`).
    """
    from pipeline.validate.regression import regression_metrics

    out_dir = Path(out_dir)
    metrics = regression_metrics(reference, predicted)
    files = RegressionReportFiles(
        metrics_json=out_dir / METRICS_JSON,
        html=out_dir / HTML,
        scatter_png=out_dir / SCATTER_PNG,
        quicklook_png=out_dir / QUICKLOOK_PNG,
    )
    document: dict[str, Any] = {"task": "regression", **metrics.to_dict()}
    if runs is not None:
        document["across_runs"] = runs.to_dict()
    if skipped:
        document["skipped_items"] = [dict(s) for s in skipped]
    document["details"] = _jsonable(dict(details))
    document["title"] = title
    json_text = json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"
    html_text = _regression_html(metrics, title, _jsonable(dict(details)), runs, skipped)
    with contextlib.ExitStack() as stack:
        html_tmp = stack.enter_context(atomic_path(files.html))
        json_tmp = stack.enter_context(atomic_path(files.metrics_json))
        scatter_tmp = stack.enter_context(atomic_path(files.scatter_png))
        quicklook_tmp = stack.enter_context(atomic_path(files.quicklook_png))
        render_scatter(
            scatter_tmp,
            np.asarray(reference),
            np.asarray(predicted),
            metrics,
            title=title,
            units=units,
        )
        render_value_quicklook(quicklook_tmp, Path(value_map), title, units)
        json_tmp.write_text(json_text, encoding="utf-8")
        html_tmp.write_text(html_text, encoding="utf-8")
    return files, metrics
