"""write_report: the four files, their content, and no partial output on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from pipeline.errors import InputDataError
from pipeline.model import ClassInfo
from pipeline.validate import figures
from pipeline.validate import report as report_module
from pipeline.validate.metrics import ClassificationMetrics, classification_metrics
from pipeline.validate.report import ReportFiles, write_report

HEIGHT, WIDTH = 40, 60

LEGEND = [
    ClassInfo(1, "Water", "#1f78b4"),
    ClassInfo(2, "Broadleaf forest", "#33a02c"),
    ClassInfo(3, "Crops & <grass>", "#ffff99"),  # must be escaped in the HTML
]


def _write_raster(path: Path, data: np.ndarray, *, nodata: float | None, crs: str) -> Path:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def _labels(nodata: int = 0) -> np.ndarray:
    """Three vertical bands of classes 1, 2, 3 with a nodata strip on top."""
    cols = np.arange(WIDTH)
    labels = np.broadcast_to(1 + cols * 3 // WIDTH, (HEIGHT, WIDTH)).astype(np.uint8).copy()
    labels[:5, :] = nodata
    return labels


@pytest.fixture
def label_map(tmp_path: Path) -> Path:
    return _write_raster(tmp_path / "labels.tif", _labels(), nodata=0, crs="EPSG:32631")


@pytest.fixture
def confidence_u8(tmp_path: Path) -> Path:
    rows = np.arange(HEIGHT)[:, None] * 100 // HEIGHT
    data = np.broadcast_to(rows, (HEIGHT, WIDTH)).astype(np.uint8).copy()
    data[-3:, :10] = 255
    return _write_raster(tmp_path / "confidence.tif", data, nodata=255, crs="EPSG:32631")


@pytest.fixture
def metrics() -> ClassificationMetrics:
    rng = np.random.default_rng(42)
    reference = rng.integers(1, 4, 300)
    predicted = np.where(rng.random(300) < 0.8, reference, rng.integers(1, 4, 300))
    return classification_metrics(reference, predicted, classes=[1, 2, 3])


DETAILS = {
    "run": "tile-31TCJ-2024",
    "training_polygons": np.int64(120),
    "validation_pixels": np.int32(300),
    "validation_share": np.float32(0.25),
    "start": date(2024, 1, 1),
    "model_path": Path("/models/rf.skops"),
    "dates": np.array(["2024-01-01", "2024-12-31"]),
    "per_sensor": {"sentinel-2": {"items": np.uint16(73)}},
    "missing": float("nan"),
}


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _write(
    out_dir: Path, metrics: ClassificationMetrics, label_map: Path, **kwargs: Any
) -> ReportFiles:
    kwargs.setdefault("confidence_map", None)
    kwargs.setdefault("title", "Test run <31TCJ>")
    kwargs.setdefault("details", DETAILS)
    kwargs.setdefault("legend", LEGEND)
    return write_report(out_dir, metrics, label_map=label_map, **kwargs)


# --------------------------------------------------------------------------------------------


def test_writes_the_four_files_and_nothing_else(
    tmp_path: Path, metrics: ClassificationMetrics, label_map: Path, confidence_u8: Path
) -> None:
    out = tmp_path / "report"
    files = _write(out, metrics, label_map, confidence_map=confidence_u8)
    assert files == ReportFiles(
        metrics_json=out / "metrics.json",
        html=out / "report.html",
        confusion_png=out / "confusion_matrix.png",
        quicklook_png=out / "map_quicklook.png",
    )
    # No temporaries left behind (they are hidden dot-files while being written).
    assert _files_in(out) == [
        "confusion_matrix.png",
        "map_quicklook.png",
        "metrics.json",
        "report.html",
    ]


def test_metrics_json_round_trips(
    tmp_path: Path, metrics: ClassificationMetrics, label_map: Path
) -> None:
    files = _write(tmp_path / "report", metrics, label_map)
    text = files.metrics_json.read_text(encoding="utf-8")
    loaded = json.loads(text)
    # sorted keys, indent 2
    assert text == json.dumps(loaded, sort_keys=True, indent=2) + "\n"
    assert ClassificationMetrics.from_dict(loaded) == metrics
    assert loaded["overall_accuracy"] == pytest.approx(metrics.overall_accuracy)
    assert loaded["macro_f1"] == pytest.approx(metrics.macro_f1)
    assert loaded["legend"] == {
        "1": {"name": "Water", "color": "#1f78b4"},
        "2": {"name": "Broadleaf forest", "color": "#33a02c"},
        "3": {"name": "Crops & <grass>", "color": "#ffff99"},
    }
    assert loaded["title"] == "Test run <31TCJ>"
    assert loaded["details"] == {
        "run": "tile-31TCJ-2024",
        "training_polygons": 120,
        "validation_pixels": 300,
        "validation_share": 0.25,
        "start": "2024-01-01",
        "model_path": "/models/rf.skops",
        "dates": ["2024-01-01", "2024-12-31"],
        "per_sensor": {"sentinel-2": {"items": 73}},
        "missing": None,
    }


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("with_confidence", [False, True])
def test_pngs_are_real_images(
    tmp_path: Path,
    metrics: ClassificationMetrics,
    label_map: Path,
    confidence_u8: Path,
    with_confidence: bool,
) -> None:
    files = _write(
        tmp_path / "report",
        metrics,
        label_map,
        confidence_map=confidence_u8 if with_confidence else None,
    )
    confusion = _png(files.confusion_png)
    quicklook = _png(files.quicklook_png)
    for pixels in (confusion, quicklook):
        height, width, _ = pixels.shape
        assert 300 <= height <= 4000
        assert 300 <= width <= 4000
        assert pixels.std() > 10  # not a blank canvas
    # The map is drawn in the legend's colours.
    colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in ("#1f78b4", "#33a02c")}
    found = {tuple(p) for p in quicklook.reshape(-1, 3)[::7]}
    assert colours <= found
    # The confidence panel makes the figure wider.
    if with_confidence:
        assert quicklook.shape[1] > 1.5 * quicklook.shape[0]


def test_html_is_self_contained_and_escaped(
    tmp_path: Path, metrics: ClassificationMetrics, label_map: Path
) -> None:
    files = _write(tmp_path / "report", metrics, label_map)
    page = files.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    assert "Water" in page
    assert "Broadleaf forest" in page
    assert "Crops &amp; &lt;grass&gt;" in page
    assert "<grass>" not in page
    assert "Test run &lt;31TCJ&gt;" in page
    assert f"{metrics.overall_accuracy:.4f}" in page
    assert f"{metrics.kappa:.4f}" in page
    assert f"{metrics.macro_f1:.4f}" in page
    assert "tile-31TCJ-2024" in page
    # Images by relative name only.
    assert 'src="confusion_matrix.png"' in page
    assert 'src="map_quicklook.png"' in page
    assert str(tmp_path) not in page
    # The confusion matrix as a table: every count appears in a cell.
    for count in metrics.confusion.ravel():
        assert f">{int(count)}</td>" in page


def test_float_confidence_and_classes_missing_from_legend(tmp_path: Path, label_map: Path) -> None:
    rng = np.random.default_rng(0)
    confidence = _write_raster(
        tmp_path / "probability.tif",
        rng.uniform(0, 1, (HEIGHT, WIDTH)).astype(np.float32),
        nodata=None,
        crs="EPSG:32631",
    )
    metrics = classification_metrics([1, 2, 7, 7], [1, 2, 7, 1])
    files = _write(
        tmp_path / "report", metrics, label_map, confidence_map=confidence, legend=LEGEND[:2]
    )
    assert "class 7" in files.html.read_text(encoding="utf-8")
    assert _png(files.quicklook_png).std() > 10


def test_label_map_with_255_nodata_and_unknown_codes(
    tmp_path: Path, metrics: ClassificationMetrics
) -> None:
    labels = _labels(nodata=255)
    labels[20:25, 20:25] = 9  # not in the legend: drawn in black, listed in the legend box
    label_map = _write_raster(tmp_path / "labels255.tif", labels, nodata=255, crs="EPSG:4326")
    files = _write(tmp_path / "report", metrics, label_map)
    assert _png(files.quicklook_png).std() > 10


# --------------------------------------------------------------------------------------------
# helpers


def test_decimated_shape() -> None:
    assert figures._decimated_shape(1000, 1500, 2000) == (1000, 1500)
    assert figures._decimated_shape(2000, 2000, 2000) == (2000, 2000)
    assert figures._decimated_shape(4001, 1000, 2000) == (1334, 334)
    height, width = figures._decimated_shape(10980, 10980, 2000)
    assert max(height, width) <= 2000
    assert height == width


def test_large_maps_are_read_decimated(
    tmp_path: Path, label_map: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(figures, "QUICKLOOK_MAX_PIXELS", 25)
    data, crs, bounds, nodata = figures._read_band(label_map)
    # factor ceil(60 / 25) = 3 on 40 x 60: ceil(40 / 3) x ceil(60 / 3)
    assert data.shape == (14, 20)
    assert crs.to_epsg() == 32631
    assert bounds == (500000.0, 4800000.0 - 10.0 * HEIGHT, 500000.0 + 10.0 * WIDTH, 4800000.0)
    assert nodata == 0
    # Nearest-neighbour: still class codes only, no averaged values.
    assert set(np.unique(data)) <= {0, 1, 2, 3}


def test_confidence_scales() -> None:
    percent = figures._confidence_percent(np.array([0, 50, 100, 255], np.uint8), 255)
    assert percent.tolist() == [0.0, 50.0, 100.0, None]
    fraction = figures._confidence_percent(np.array([0.0, 0.5, 1.0, np.nan], np.float32), None)
    assert fraction.tolist() == [0.0, 50.0, 100.0, None]
    already_percent = figures._confidence_percent(np.array([0.0, 80.0], np.float32), None)
    assert already_percent.tolist() == [0.0, 80.0]


# --------------------------------------------------------------------------------------------
# failures leave nothing behind


def test_failure_in_the_middle_leaves_no_files(
    tmp_path: Path,
    metrics: ClassificationMetrics,
    label_map: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("quicklook exploded")

    monkeypatch.setattr(report_module, "render_quicklook", broken)
    out = tmp_path / "report"
    with pytest.raises(RuntimeError, match="quicklook exploded"):
        _write(out, metrics, label_map)
    assert _files_in(out) == []  # not even hidden temporaries


def test_failure_keeps_the_previous_report(
    tmp_path: Path,
    metrics: ClassificationMetrics,
    label_map: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "report"
    files = _write(out, metrics, label_map)
    before = {name: (out / name).read_bytes() for name in _files_in(out)}

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report_module, "render_quicklook", broken)
    with pytest.raises(OSError, match="disk full"):
        _write(out, metrics, label_map, title="second attempt")
    assert {name: (out / name).read_bytes() for name in _files_in(out)} == before
    assert "second attempt" not in files.html.read_text(encoding="utf-8")


def test_unserializable_details_fail_before_writing(
    tmp_path: Path, metrics: ClassificationMetrics, label_map: Path
) -> None:
    out = tmp_path / "report"
    with pytest.raises(TypeError, match=r"details\['model'\] is a object"):
        _write(out, metrics, label_map, details={"model": object()})
    assert _files_in(out) == []


def test_missing_label_map(tmp_path: Path, metrics: ClassificationMetrics) -> None:
    out = tmp_path / "report"
    with pytest.raises(InputDataError, match="cannot open the raster"):
        _write(out, metrics, tmp_path / "nope.tif")
    assert _files_in(out) == []


@pytest.mark.parametrize(
    ("legend", "message"),
    [
        ([ClassInfo(1, "a"), ClassInfo(1, "b")], "twice"),
        ([ClassInfo(1, "a", "not-a-colour")], "not a colour"),
    ],
)
def test_bad_legend(
    tmp_path: Path,
    metrics: ClassificationMetrics,
    label_map: Path,
    legend: list[ClassInfo],
    message: str,
) -> None:
    out = tmp_path / "report"
    with pytest.raises(InputDataError, match=message):
        _write(out, metrics, label_map, legend=legend)
    assert _files_in(out) == []


def test_import_leaves_pyplot_and_the_backend_alone() -> None:
    code = (
        "import sys, matplotlib\n"
        "backend = matplotlib.rcParams._get_backend_or_none()\n"
        "import pipeline.validate.report\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.rcParams._get_backend_or_none() == backend\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# area estimates, across-run intervals, regression report


def test_area_and_runs_sections(
    tmp_path: Path, metrics: ClassificationMetrics, label_map: Path
) -> None:
    from pipeline.validate.aggregate import aggregate_classification
    from pipeline.validate.area import area_estimates_from_metrics, mapped_area_of

    with rasterio.open(label_map) as src:
        mapped = mapped_area_of(src.read(1), src.nodata, pixel_area=100.0)
    area = area_estimates_from_metrics(metrics, mapped)
    runs = aggregate_classification([metrics, metrics], seeds=[7, 8])
    files = _write(tmp_path / "report", metrics, label_map, area=area, runs=runs)
    loaded = json.loads(files.metrics_json.read_text(encoding="utf-8"))
    assert loaded["area_estimates"] == json.loads(json.dumps(area.to_dict()))
    assert loaded["across_runs"]["seeds"] == [7, 8]
    assert ClassificationMetrics.from_dict(loaded) == metrics  # the base document is unchanged
    page = files.html.read_text(encoding="utf-8")
    assert "Olofsson et al. 2014" in page
    assert f"{area.overall_accuracy.value:.4f} ± {area.overall_accuracy.half_width:.4f}" in page
    assert "Across 2 runs" in page
    assert "indicative" in page  # the sampling caveat is stated


SKIPPED = (
    {"item": "s2-20170521", "sensor": "s2", "problem": "'/data/<b04>.tif' does not exist"},
    {"item": "s2-20170610", "sensor": "s2", "problem": "cannot be read: not a TIFF file"},
)


def test_items_left_out_are_listed_with_why(
    tmp_path: Path, metrics: ClassificationMetrics, label_map: Path
) -> None:
    files = _write(tmp_path / "report", metrics, label_map, skipped=SKIPPED)
    loaded = json.loads(files.metrics_json.read_text(encoding="utf-8"))
    assert loaded["skipped_items"] == [dict(s) for s in SKIPPED]
    page = files.html.read_text(encoding="utf-8")
    assert "Items left out" in page and "2 catalog item(s) were left out" in page
    assert "<td>s2-20170610</td><td>s2</td><td>cannot be read: not a TIFF file</td>" in page
    assert "&lt;b04&gt;" in page  # escaped
    plain = _write(tmp_path / "plain", metrics, label_map)
    assert "skipped_items" not in json.loads(plain.metrics_json.read_text(encoding="utf-8"))
    assert "Items left out" not in plain.html.read_text(encoding="utf-8")


def test_regression_report(tmp_path: Path) -> None:
    from pipeline.validate.report import write_regression_report

    rng = np.random.default_rng(1)
    values = rng.uniform(0, 40, (HEIGHT, WIDTH)).astype(np.float32)
    values[:3] = -9999
    value_map = _write_raster(tmp_path / "height.tif", values, nodata=-9999, crs="EPSG:32631")
    reference = rng.uniform(0, 40, 80)
    predicted = reference + rng.normal(0, 3, 80)
    out = tmp_path / "report"
    files, scores = write_regression_report(
        out, reference, predicted, value_map, title="canopy height", details={"run": "x"},
        units="m", skipped=SKIPPED[:1],
    )  # fmt: skip
    assert _files_in(out) == ["map_quicklook.png", "metrics.json", "report.html", "scatter.png"]
    loaded = json.loads(files.metrics_json.read_text(encoding="utf-8"))
    assert loaded["task"] == "regression"
    assert loaded["rmse"] == pytest.approx(scores.rmse)
    assert loaded["skipped_items"] == [SKIPPED[0]]
    page = files.html.read_text(encoding="utf-8")
    assert "RMSE" in page and 'src="scatter.png"' in page
    assert "1 catalog item(s) were left out" in page
    for png in (files.scatter_png, files.quicklook_png):
        with Image.open(png) as image:
            assert image.format == "PNG"


def test_regression_report_leaves_nothing_on_failure(tmp_path: Path) -> None:
    from pipeline.validate.report import write_regression_report

    out = tmp_path / "report"
    with pytest.raises(InputDataError):
        write_regression_report(
            out, [1.0, 2.0], [1.0, 2.0], tmp_path / "missing.tif", title="t", details={}
        )
    assert _files_in(out) == []
