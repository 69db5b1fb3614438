"""Cross-validation on the real sits sample tables: the figures are reproducible and are those of
a direct scikit-learn computation on the same folds; groups never straddle a split; the report is
the map-validation report; the CLI command end to end."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score
from sklearn.model_selection import (
    GroupShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
    StratifiedShuffleSplit,
    cross_val_predict,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputDataError
from pipeline.manifest import ModelSpec
from pipeline.samples.tables import SampleTable, read_sample_table, sample_table_from_frame
from pipeline.validate.crossval import (
    FOLDS_JSON,
    PREDICTIONS_TIF,
    CrossValPlan,
    CrossValResult,
    cross_validate_table,
    plan_splits,
    write_crossval_report,
)
from pipeline.warnings import SamplingWarning
from tests.learn.data import CERRADO, MODIS_NDVI

TREES = 10
RF = ModelSpec(estimator="sklearn.ensemble.RandomForestClassifier", params={"n_estimators": TREES})
TABLES = {"cerrado_2classes": CERRADO, "samples_modis_ndvi": MODIS_NDVI}


@functools.cache
def _table(name: str) -> SampleTable:
    return read_sample_table(TABLES[name])


@functools.cache
def _kfold(name: str, seed: int) -> CrossValResult:
    return cross_validate_table(_table(name), RF, CrossValPlan(folds=5, seed=seed))


def _t_interval(values: list[float]) -> tuple[float, float]:
    n = len(values)
    return float(np.mean(values)), float(
        stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    )


@pytest.mark.parametrize("name", list(TABLES))
def test_kfold_figures_are_those_of_scikit_learn_on_the_same_folds(name: str) -> None:
    table = _table(name)
    seed = 7
    result = _kfold(name, seed)
    x, y, groups = table.features, table.codes, table.location_ids
    classes = [c.code for c in table.legend]
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=seed)
    accuracy, kappa, f1 = [], [], []
    for (train, test), ours in zip(folds.split(x, y, groups), result.folds, strict=True):
        np.testing.assert_array_equal(ours.split.test, test)
        model = RandomForestClassifier(n_estimators=TREES, random_state=seed).fit(
            x[train], y[train]
        )
        predicted = model.predict(x[test])
        np.testing.assert_array_equal(ours.predicted, predicted)
        accuracy.append(accuracy_score(y[test], predicted))
        kappa.append(cohen_kappa_score(y[test], predicted))
        f1.append(f1_score(y[test], predicted, labels=classes, average=None))
        assert ours.metrics.overall_accuracy == pytest.approx(accuracy[-1], abs=1e-12)
        assert ours.metrics.kappa == pytest.approx(kappa[-1], abs=1e-12)
    overall = result.summary.overall
    for ours, theirs in ((overall["overall_accuracy"], accuracy), (overall["kappa"], kappa)):
        mean, half = _t_interval(theirs)
        assert ours.mean == pytest.approx(mean, abs=1e-12)
        assert ours.half_width == pytest.approx(half, abs=1e-12)
        assert ours.n == 5
    per_class_f1 = np.array(f1)
    for i, code in enumerate(classes):
        mean, half = _t_interval(per_class_f1[:, i].tolist())
        assert result.summary.per_class["f1"][code].mean == pytest.approx(mean, abs=1e-12)
        assert result.summary.per_class["f1"][code].half_width == pytest.approx(half, abs=1e-12)
    # The pooled held-out predictions are cross_val_predict's.
    pooled = cross_val_predict(
        RandomForestClassifier(n_estimators=TREES, random_state=seed),
        x,
        y,
        groups=groups,
        cv=StratifiedGroupKFold(5, shuffle=True, random_state=seed),
    )
    np.testing.assert_array_equal(result.pooled.confusion, confusion_matrix(y, pooled))
    assert result.pooled.n_samples == len(table)


@pytest.mark.parametrize("name", list(TABLES))
def test_same_seed_same_numbers_other_seed_other_split(name: str) -> None:
    first = _kfold(name, 7)
    again = cross_validate_table(_table(name), RF, CrossValPlan(folds=5, seed=7))
    assert json.dumps(again.to_dict()) == json.dumps(first.to_dict())
    other = _kfold(name, 8)
    assert not all(
        np.array_equal(a.split.test, b.split.test)
        for a, b in zip(first.folds, other.folds, strict=True)
    )
    assert other.summary.overall["overall_accuracy"].mean != (
        first.summary.overall["overall_accuracy"].mean
    )


def test_folds_keep_places_together_and_stratify() -> None:
    table = _table("cerrado_2classes")  # 746 samples at 83 places, revisited in other years
    for method in (CrossValPlan(folds=5, repeats=2, seed=1), CrossValPlan("split", 5, 3, 0.7, 1)):
        splits = plan_splits(method, table.codes, table.location_ids)
        assert len(splits) == (10 if method.method == "kfold" else 3)
        for split in splits:
            assert not set(table.location_ids[split.train]) & set(table.location_ids[split.test])
    # k-fold: every sample is tested once per repeat; repeats differ.
    splits = plan_splits(CrossValPlan(folds=5, repeats=2, seed=1), table.codes)
    tested = [np.concatenate([s.test for s in splits if s.repeat == r]) for r in (0, 1)]
    for order in tested:
        np.testing.assert_array_equal(np.sort(order), np.arange(len(table)))
    assert not np.array_equal(tested[0], tested[1])
    # Without groups the folds are stratified: class shares within a point of the table's.
    share = np.mean(table.codes == 1)
    for split in plan_splits(CrossValPlan(folds=5, seed=1), table.codes):
        assert abs(np.mean(table.codes[split.test] == 1) - share) < 0.01


@pytest.mark.parametrize("grouped", [False, True])
def test_random_splits_are_scikit_learns(grouped: bool) -> None:
    table = _table("samples_modis_ndvi")
    plan = CrossValPlan("split", repeats=3, train_fraction=0.6, seed=11)
    result = cross_validate_table(table, RF, plan, group_by="location" if grouped else "none")
    x, y, groups = table.features, table.codes, table.location_ids
    accuracies = []
    for repeat, ours in enumerate(result.folds):
        seed = 11 + repeat
        splitter = (
            GroupShuffleSplit(1, train_size=0.6, random_state=seed)
            if grouped
            else StratifiedShuffleSplit(1, train_size=0.6, random_state=seed)
        )
        ((train, test),) = splitter.split(x, y, groups if grouped else None)
        np.testing.assert_array_equal(ours.split.train, train)
        model = RandomForestClassifier(n_estimators=TREES, random_state=seed).fit(
            x[train], y[train]
        )
        accuracies.append(accuracy_score(y[test], model.predict(x[test])))
        if not grouped:
            assert len(test) == pytest.approx(0.4 * len(table), abs=1)
    mean, half = _t_interval(accuracies)
    assert result.summary.overall["overall_accuracy"].mean == pytest.approx(mean, abs=1e-12)
    assert result.summary.overall["overall_accuracy"].half_width == pytest.approx(half, abs=1e-12)
    assert result.summary.seeds == (11, 12, 13)


def test_any_estimator_of_the_builder_with_standardization() -> None:
    table = _table("samples_modis_ndvi")
    spec = ModelSpec(
        estimator="sklearn.neighbors.KNeighborsClassifier",
        params={"n_neighbors": 7},
        standardize=True,
    )
    result = cross_validate_table(table, spec, CrossValPlan(folds=4, seed=3), group_by="none")
    direct = cross_val_predict(
        make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=7)),
        table.features,
        table.codes,
        cv=StratifiedKFold(4, shuffle=True, random_state=3),
    )
    np.testing.assert_array_equal(result.pooled.confusion, confusion_matrix(table.codes, direct))
    assert result.grouped_by == "none"


def test_bad_plans_and_small_classes_are_reported() -> None:
    with pytest.raises(InputDataError, match="folds: k-fold cross-validation needs at least 2"):
        CrossValPlan(folds=1)
    with pytest.raises(InputDataError, match=r"train_fraction: .* strictly between 0 and 1"):
        CrossValPlan("split", train_fraction=1.5)
    with pytest.raises(InputDataError, match="for repeated random splits, not k-fold"):
        CrossValPlan(folds=5, train_fraction=0.5)
    table = _table("cerrado_2classes")
    few = table.location_ids % 3  # 3 groups
    with pytest.raises(InputDataError, match="needs at least 5 groups, the table has 3"):
        plan_splits(CrossValPlan(folds=5), table.codes, few)
    # One class in only 2 places: a warning that some test folds lack it, counted in groups.
    codes = np.where(np.isin(table.location_ids, [0, 1]), 3, table.codes)
    with pytest.warns(SamplingWarning, match="class 3 has 2 groups, fewer than the 5 folds"):
        plan_splits(CrossValPlan(folds=5), codes, table.location_ids)


def test_report_is_the_map_validation_report(tmp_path: Path) -> None:
    table = _table("cerrado_2classes")
    result = _kfold("cerrado_2classes", 7)
    files = write_crossval_report(tmp_path, table, result, title="cv", source="cerrado")
    document = json.loads(files.metrics_json.read_text())
    assert document["overall_accuracy"] == pytest.approx(result.pooled.overall_accuracy)
    assert document["across_runs"]["runs"] == 5
    assert document["across_runs"]["overall"]["kappa"]["mean"] == pytest.approx(
        result.summary.overall["kappa"].mean
    )
    assert document["details"]["validation"] == (
        "5-fold cross-validation (stratified, grouped by location)"
    )
    assert [document["legend"][str(c)]["name"] for c in (1, 2)] == ["Cerrado", "Pasture"]
    html = files.html.read_text()
    assert "Across 5 runs" in html and "Cerrado" in html
    splits = json.loads((tmp_path / FOLDS_JSON).read_text())["splits"]
    assert [s["overall_accuracy"] for s in splits] == [
        f.metrics.overall_accuracy for f in result.folds
    ]
    assert sum(s["n_test"] for s in splits) == len(table)
    assert files.confusion_png.stat().st_size > 0 and (tmp_path / PREDICTIONS_TIF).is_file()


def test_a_wide_table_cross_validates_like_its_long_form(tmp_path: Path) -> None:
    long = _table("cerrado_2classes")
    wide = sample_table_from_frame(long.frame().iloc[::-1], form="wide")
    assert json.dumps(cross_validate_table(wide, RF, CrossValPlan(folds=3, seed=2)).to_dict()) == (
        json.dumps(cross_validate_table(long, RF, CrossValPlan(folds=3, seed=2)).to_dict())
    )


def test_cli_crossval_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cv"
    args = ["crossval", str(MODIS_NDVI), "--estimator", "sklearn.ensemble.RandomForestClassifier"]
    args += ["--param", f"n_estimators={TREES}", "--folds", "5", "--seed", "7", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = _kfold("samples_modis_ndvi", 7)
    accuracy = expected.summary.overall["overall_accuracy"]
    assert "5-fold cross-validation (stratified, grouped by location)" in result.stdout
    assert f"overall accuracy {accuracy.mean:.3f} ± {accuracy.half_width:.3f}" in result.stdout
    document = json.loads((out / "metrics.json").read_text())
    assert document["across_runs"]["overall"]["overall_accuracy"]["mean"] == accuracy.mean
    assert (out / "report.html").is_file() and (out / FOLDS_JSON).is_file()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            ["--param", "n_estimatorz=5"],
            "--param: sklearn.ensemble.RandomForestClassifier does not",
        ),
        (["--train-fraction", "1.5"], "--train-fraction: the training fraction"),
        (["--folds", "1"], "--folds: k-fold cross-validation needs at least 2 folds"),
        (
            ["--estimator", "sklearn.nothing.Here"],
            "--estimator: estimator 'sklearn.nothing.Here' cannot be",
        ),
        (["--group-by", "polygon"], "has no group column 'polygon'"),
        (["--param", "n_estimators"], "is not NAME=VALUE"),
    ],
)
def test_cli_crossval_bad_options(tmp_path: Path, extra: list[str], words: str) -> None:
    args = ["crossval", str(CERRADO), "--out", str(tmp_path / "cv"), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split())
    assert not (tmp_path / "cv" / "metrics.json").exists()
