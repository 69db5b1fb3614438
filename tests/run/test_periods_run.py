"""Several years with one model (issue 9): samples with their own time window, aligned by
position in the season, and further periods mapped with the run's one model.

The real Slovenia series covers 2016 and 2017. Its land-use polygons are given twice: observed
in 2017 (training) and in 2016 (validation), so the model trained on 2017 is scored on another
year, and 2016 is mapped too (``also_map``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import yaml

from pipeline.errors import ManifestError
from pipeline.manifest import parse_manifest
from tests.conftest import DEMO_DIR, DEMO_MANIFEST
from tests.run.helpers import cli, demo_manifest, last_summary

pytestmark = pytest.mark.slow

TRAIN_WINDOW = "20170301-20170930"
VALIDATION_WINDOW = "20160301-20160930"


def two_years(folder: Path, extra: dict[str, Any] | None = None) -> Path:
    """The demo's polygons observed in 2017 (train) and in 2016 (validation)."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = gpd.read_file(DEMO_DIR / "reference" / "lulc.gpkg")
    seen_2017 = reference.assign(observed="2017-03-01", side="train", place=reference.index)
    seen_2016 = reference.assign(observed="2016-03-01", side="validation", place=reference.index)
    for name, value in (extra or {}).items():
        seen_2016[name] = value
    both = gpd.GeoDataFrame(pd.concat([seen_2017, seen_2016], ignore_index=True), crs=reference.crs)
    path = folder / "years.gpkg"
    both.to_file(path)
    return path


def windows_spec(path: Path) -> Any:
    def change(spec: dict[str, Any]) -> None:
        spec["reference"].update(path=str(path), start_field="observed", split_field="side")
        spec["also_map"] = [{"start": "2016-03-01", "end": "2016-09-30", "name": "2016"}]

    return change


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("periods")
    manifest = demo_manifest(folder, windows_spec(two_years(folder)))
    done = cli("run", str(manifest))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    store = folder / "store"
    return {
        "store": store,
        "manifest": manifest,
        "summary": last_summary(done.stdout + done.stderr),
        "samples": gpd.read_parquet(store / "samples" / "samples.parquet"),
    }


def test_each_sample_is_read_on_its_own_window(run: dict[str, Any]) -> None:
    samples = run["samples"]
    sides = samples.groupby("window")["split"].unique().to_dict()
    assert {k: list(v) for k, v in sides.items()} == {
        TRAIN_WINDOW: ["train"],
        VALIDATION_WINDOW: ["validation"],
    }
    # The same places in both years: the same pixels, twice.
    by_window = {w: set(zip(g["row"], g["col"], strict=True)) for w, g in samples.groupby("window")}
    assert by_window[TRAIN_WINDOW] == by_window[VALIDATION_WINDOW]
    features = [c for c in samples.columns if c.startswith("s2_")]
    assert features[:3] == ["s2_ndvi_t00", "s2_ndvi_t01", "s2_ndvi_t02"]
    assert len(features) == 22  # 2017-03-01 .. 2017-09-30 every 10 days
    # A place's two years differ (they are read on different dates).
    one = samples.sort_values(["row", "col"]).groupby("window")[features].first()
    assert not np.allclose(one.loc[TRAIN_WINDOW].to_numpy(), one.loc[VALIDATION_WINDOW].to_numpy())


def test_window_features_equal_the_cube_of_the_same_period(run: dict[str, Any]) -> None:
    """Aligned by position in the season: a 2016 sample's k-th feature is the 2016 cube's k-th
    date, a 2017 sample's the 2017 cube's (streamed from the imagery, equal to the stored)."""
    store: Path = run["store"]
    samples = run["samples"]
    features = [c for c in samples.columns if c.startswith("s2_ndvi_")]
    for cube, window in (
        (store / "cube.zarr", TRAIN_WINDOW),
        (store / "periods" / "2016" / "cube.zarr", VALIDATION_WINDOW),
    ):
        # int16 codes: xarray decodes them in float64; their float32 rounding is what we read.
        values = xr.open_zarr(cube)["s2_ndvi"].to_numpy().astype(np.float32)
        rows = samples[samples["window"] == window]
        stored = values[:, rows["row"].to_numpy(), rows["col"].to_numpy()].T
        np.testing.assert_array_equal(rows[features].to_numpy(), stored)


def test_another_year_is_mapped_and_scored_with_the_one_model(run: dict[str, Any]) -> None:
    store: Path = run["store"]
    for folder in (store, store / "periods" / "2016"):
        with rasterio.open(folder / "maps" / "labels.tif") as src:
            assert src.count == 1
        assert (folder / "maps" / "confidence.tif").is_file()
        collection = json.loads((folder / "stac" / "collection.json").read_text())
        assert collection["type"] == "Collection"
    later = store / "periods" / "2016" / "maps" / "labels.tif"
    with rasterio.open(store / "maps" / "labels.tif") as a, rasterio.open(later) as b:
        first, second = a.read(1), b.read(1)
        assert a.transform == b.transform
    assert (first != second).any()  # one model, two years of imagery: two different maps
    # The report scores the 2016 validation samples on their own features; the 2016 map, made
    # from the 2016 cube with the same model, gives exactly the same labels there.
    validation = run["samples"][run["samples"]["split"] == "validation"]
    mapped = second[validation["row"].to_numpy(), validation["col"].to_numpy()]
    accuracy = float((mapped == validation["label"].to_numpy()).mean())
    metrics = json.loads((store / "report" / "metrics.json").read_text())
    assert metrics["overall_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert metrics["n_samples"] == len(validation)
    outputs = run["summary"]["outputs"]
    assert outputs["periods"]["2016"]["labels"].endswith("periods/2016/maps/labels.tif")
    report = (store / "report" / "report.html").read_text()
    assert "own window" in report and TRAIN_WINDOW in report


def test_a_resumed_run_redoes_nothing(run: dict[str, Any]) -> None:
    again = cli("run", "--resume", str(run["manifest"]))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    summary = last_summary(again.stdout + again.stderr)
    assert summary["units_run"] == 0 and summary["units_skipped"] > 60


def test_a_window_shorter_than_the_season_is_refused(tmp_path: Path) -> None:
    path = two_years(tmp_path, {"until": "2016-06-30"})
    reference = gpd.read_file(path)
    reference["until"] = np.where(reference["side"] == "train", "2017-09-30", "2016-06-30")
    reference.to_file(path)

    def change(spec: dict[str, Any]) -> None:
        windows_spec(path)(spec)
        spec["reference"]["end_field"] = "until"

    done = cli("run", str(demo_manifest(tmp_path, change)))
    assert done.returncode != 0
    text = " ".join((done.stdout + done.stderr).split())
    assert "2016-03-01 .. 2016-06-30 gives 13 dates" in text, text[-2000:]
    assert "spec.period gives 22" in text and "spec.reference.end_field" in text
    assert not (tmp_path / "store" / "cube.zarr").exists()


def test_an_also_map_period_of_another_length_is_refused(tmp_path: Path) -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["also_map"] = [{"start": "2016-03-01", "end": "2016-12-31"}]

    done = cli("run", str(demo_manifest(tmp_path, change)))
    assert done.returncode != 0
    text = " ".join((done.stdout + done.stderr).split())
    assert "spec.also_map[0]" in text and "gives 31 dates" in text, text[-2000:]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"observed": "spring"}, "have no date in 'observed'"),
        ({"side": "test"}, "neither 'train' nor 'validation' in 'side'"),
    ],
)
def test_bad_window_or_split_values_are_named(
    tmp_path: Path, values: dict[str, str], message: str
) -> None:
    path = two_years(tmp_path, values)
    # validate reads the reference's columns (no geometry), so it refuses what the run would
    for command in ("validate", "run"):
        done = cli(command, str(demo_manifest(tmp_path, windows_spec(path))))
        assert done.returncode != 0, command
        text = " ".join((done.stdout + done.stderr).split())
        assert message in text, text[-2000:]
    assert not (tmp_path / "store" / "cube.zarr").exists()


def _spec(change: Any) -> dict[str, Any]:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    change(data["spec"])
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s["reference"].update(end_field="until"),
            "end_field 'until' is given without start_field",
        ),
        (
            lambda s: (
                s["reference"].update(split_field="side"),
                s["sampling"].update(runs=3),
            ),
            "fixes the split, so sampling.runs 3",
        ),
        (
            lambda s: s.update(
                task="extraction", also_map=[{"start": "2016-01-01", "end": "2016-12-31"}]
            ),
            "task 'extraction' makes no map",
        ),
        (
            lambda s: s.update(also_map=[{"start": "2017-01-01", "end": "2017-12-31"}]),
            "period names ['2017'] appear more than once",
        ),
        (
            lambda s: s.update(
                also_map=[{"start": "2016-01-01", "end": "2016-12-31", "name": "a/b"}]
            ),
            "spec.also_map[0].name",
        ),
    ],
)
def test_period_and_window_manifest_errors(change: Any, message: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse_manifest(yaml.safe_dump(_spec(change)), base_dir=DEMO_DIR, source="test.yaml")
    text = " ".join(str(error.value).split())
    assert message in text, text


def test_an_extraction_reads_each_window_and_keeps_a_place_on_one_side(
    run: dict[str, Any], tmp_path: Path
) -> None:
    """task extraction with windows and a group shared by both years of a place: the same
    features as the classification run read, and a place never on both sides of the split."""
    path = two_years(tmp_path)

    def change(spec: dict[str, Any]) -> None:
        spec["task"] = "extraction"
        spec["reference"].update(path=str(path), start_field="observed", group_field="place")

    done = cli("run", str(demo_manifest(tmp_path, change)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    extracted = gpd.read_parquet(tmp_path / "store" / "samples" / "samples.parquet")
    assert sorted(extracted["window"].unique()) == [VALIDATION_WINDOW, TRAIN_WINDOW]
    sides = extracted.groupby("group")["split"].nunique()
    assert (sides == 1).all() and extracted["split"].nunique() == 2
    assert extracted.groupby("group")["window"].nunique().max() == 2  # both years of a place
    keys = ["window", "row", "col"]
    features = [c for c in extracted.columns if c.startswith("s2_")]
    both = extracted[[*keys, *features]].merge(
        run["samples"][[*keys, *features]], on=keys, suffixes=("", "_run")
    )
    assert len(both) == len(extracted)
    np.testing.assert_array_equal(
        both[features].to_numpy(), both[[f"{f}_run" for f in features]].to_numpy()
    )
