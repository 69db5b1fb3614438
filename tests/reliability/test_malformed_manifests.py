"""Malformed manifests through the real CLI (``sitsflow run``): each refused before anything is
written, exit code 2, no traceback, one message with the field, the bad value and a fix.

Each case edits the demo manifest one way (a dict edit, or a text edit for YAML-level faults).
The number of cases is printed at the end of the session (``conftest.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import DEMO_DIR, DEMO_MANIFEST
from tests.reliability.conftest import REFUSED

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit setting ``spec.<path>`` (dots and [index]) to ``value``."""

    def edit(spec: dict[str, Any]) -> None:
        node: Any = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        node: Any = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[part]
        del node[parts[-1]]

    return edit


def _sensor(**values: Any) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        spec["sensors"][0].update(values)

    return edit


# (id, edit, words that must all be in the message: the field, the value, the fix)
CASES: list[tuple[str, Edit, list[str]]] = [
    # --- the model (issue 17: bad values found at validate, not after the cube) ---
    ("n-estimators-0", _set("model.params", {"n_estimators": 0}),
     ["spec.model.params", "n_estimators", "Got 0", "Fix:"]),
    ("n-estimators-many", _set("model.params", {"n_estimators": "many"}),
     ["spec.model.params", "'many'", "Fix:"]),
    ("n-estimators-negative", _set("model.params", {"n_estimators": -5}),
     ["spec.model.params", "-5", "Fix:"]),
    ("max-depth-misspelt", _set("model.params", {"n_estimators": 10, "max_dept": 3}),
     ["spec.model.params", "'max_dept'", "did you mean 'max_depth'", "Fix:"]),
    ("criterion-unknown", _set("model.params", {"criterion": "ginny"}),
     ["spec.model.params", "ginny", "Fix:"]),
    ("min-samples-leaf-0", _set("model.params", {"min_samples_leaf": 0}),
     ["spec.model.params", "min_samples_leaf", "Fix:"]),
    ("max-features-bad", _set("model.params", {"max_features": "most"}),
     ["spec.model.params", "most", "Fix:"]),
    ("estimator-class-typo", _set("model.estimator", "sklearn.ensemble.RandomForest"),
     ["spec.model.estimator", "sklearn.ensemble.RandomForest'", "did you mean", "Fix:"]),
    ("estimator-module-typo", _set("model.estimator", "sklearn.ensembel.RandomForestClassifier"),
     ["spec.model.estimator", "sklearn.ensembel", "Fix:"]),
    ("estimator-not-a-path", _set("model.estimator", "random forest"),
     ["spec.model.estimator", "random forest", "Fix:"]),
    ("estimator-not-an-estimator", _set("model.estimator", "collections.OrderedDict"),
     ["spec.model.estimator", "collections.OrderedDict", "no fit method", "Fix:"]),
    ("svc-c-negative", lambda s: s["model"].update(
        estimator="sklearn.svm.SVC", params={"C": -1.0, "probability": True}),
     ["spec.model.params", "-1.0", "Fix:"]),
    ("model-kind-unknown", _set("model.kind", "xgboost"),
     ["spec.model.kind", "xgboost", "Fix:"]),
    ("torch-without-architecture", _set("model", {"kind": "torch"}),
     ["spec.model", "architecture", "Fix:"]),
    ("grid-search-empty", _set("model.grid_search", {"param_grid": {}}),
     ["spec.model.grid_search.param_grid", "Fix:"]),
    # --- bands and masks ---
    ("band-scale-nan", _set("sensors.[0].bands.ndvi.scale", float("nan")),
     ["spec.sensors[0].bands.ndvi.scale", "NaN", "finite number", "Fix:"]),
    ("band-scale-inf", _set("sensors.[0].bands.ndvi.scale", float("inf")),
     ["spec.sensors[0].bands.ndvi.scale", "Infinity", "finite number", "Fix:"]),
    ("band-offset-inf", _set("sensors.[0].bands.ndvi.offset", float("-inf")),
     ["spec.sensors[0].bands.ndvi.offset", "Infinity", "finite number", "Fix:"]),
    ("band-scale-text", _set("sensors.[0].bands.ndvi.scale", "tiny"),
     ["spec.sensors[0].bands.ndvi.scale", "tiny", "Fix:"]),
    ("band-no-asset", _set("sensors.[0].bands.ndvi", {"scale": 0.0001}),
     ["spec.sensors[0].bands.ndvi.asset", "Fix:"]),
    ("band-unknown-key", _set("sensors.[0].bands.ndvi.scael", 0.1),
     ["spec.sensors[0].bands.ndvi.scael", "did you mean 'scale'", "Fix:"]),
    ("mask-values-text", _set("sensors.[0].masks.[0].invalid_values", "one"),
     ["spec.sensors[0].masks[0].invalid_values", "one", "Fix:"]),
    ("mask-no-asset", _set("sensors.[0].masks.[0]", {"invalid_values": [1]}),
     ["spec.sensors[0].masks[0].asset", "Fix:"]),
    ("date-step-0", _sensor(date_step_days=0),
     ["spec.sensors[0].date_step_days", "0", "Fix:"]),
    ("date-step-text", _sensor(date_step_days="weekly"),
     ["spec.sensors[0].date_step_days", "weekly", "Fix:"]),
    ("sensor-key-misspelt", _sensor(date_stepdays=10),
     ["spec.sensors[0].date_stepdays", "did you mean 'date_step_days'", "Fix:"]),
    ("sensor-name-missing", lambda s: s["sensors"][0].pop("name"),
     ["spec.sensors[0].name", "Fix:"]),
    ("sensors-empty", _set("sensors", []), ["spec.sensors", "Fix:"]),
    ("profile-unknown", _sensor(profile="sentinel-9"),
     ["spec.sensors[0]", "sentinel-9", "Fix:"]),
    # --- the catalog ---
    ("catalog-kind-unknown", _set("sensors.[0].catalog.kind", "ftp"),
     ["spec.sensors[0].catalog.kind", "ftp", "Fix:"]),
    ("catalog-timeout-0", _set("sensors.[0].catalog.timeout_s", 0),
     ["spec.sensors[0].catalog.timeout_s", "0", "Fix:"]),
    ("catalog-timeout-text", _set("sensors.[0].catalog.timeout_s", "long"),
     ["spec.sensors[0].catalog.timeout_s", "long", "Fix:"]),
    ("catalog-retries-negative", _set("sensors.[0].catalog.retries", -1),
     ["spec.sensors[0].catalog.retries", "-1", "Fix:"]),
    ("catalog-max-cloud-200", _set("sensors.[0].catalog.max_cloud_cover", 200),
     ["spec.sensors[0].catalog.max_cloud_cover", "200", "Fix:"]),
    ("catalog-url-missing", lambda s: s["sensors"][0]["catalog"].pop("url"),
     ["spec.sensors[0].catalog.url", "Fix:"]),
    ("catalog-url-credentials", _set("sensors.[0].catalog.url", "https://me:pw123456@h/x.json"),
     ["spec.sensors[0].catalog.url", "holds credentials", "Fix:"]),
    ("catalog-bbox-three", _set("sensors.[0].catalog.bbox", [1, 2, 3]),
     ["spec.sensors[0].catalog.bbox", "Fix:"]),
    ("catalog-page-size-0", _set("sensors.[0].catalog.page_size", 0),
     ["spec.sensors[0].catalog.page_size", "0", "Fix:"]),
    # --- the period ---
    ("period-empty", _set("period", {"start": "2017-06-01", "end": "2017-06-01"}),
     ["spec.period", "2017-06-01", "Fix:"]),
    ("period-reversed", _set("period", {"start": "2017-12-31", "end": "2017-01-01"}),
     ["spec.period", "2017-01-01", "Fix:"]),
    ("period-not-a-date", _set("period.start", "yesterday"),
     ["spec.period.start", "yesterday", "Fix:"]),
    ("period-missing-end", _drop("period.end"), ["spec.period.end", "Fix:"]),
    ("task-unknown", _set("task", "segmentation"), ["spec.task", "segmentation", "Fix:"]),
    # --- reference and sampling ---
    ("min-pixels-1e9", _set("sampling.min_pixels_per_class", 1_000_000_000),
     ["spec.sampling.min_pixels_per_class", "1000000000", "Fix:"]),
    ("min-pixels-0", _set("sampling.min_pixels_per_class", 0),
     ["spec.sampling.min_pixels_per_class", "0", "Fix:"]),
    ("validation-fraction-1.5", _set("sampling.validation_fraction", 1.5),
     ["spec.sampling.validation_fraction", "1.5", "Fix:"]),
    ("validation-fraction-0", _set("sampling.validation_fraction", 0),
     ["spec.sampling.validation_fraction", "0", "Fix:"]),
    ("seed-negative", _set("sampling.seed", -3), ["spec.sampling.seed", "-3", "Fix:"]),
    ("strategy-unknown", _set("sampling.strategy", "most"),
     ["spec.sampling.strategy", "most", "Fix:"]),
    ("strategy-without-fraction", _set("sampling.strategy", "percentage"),
     ["spec.sampling", "fraction", "Fix:"]),
    ("max-pixels-per-polygon-0", _set("sampling.max_pixels_per_polygon", 0),
     ["spec.sampling.max_pixels_per_polygon", "0", "Fix:"]),
    ("reference-path-missing", _drop("reference.path"), ["spec.reference.path", "Fix:"]),
    ("reference-two-fields", _set("reference.value_field", "AREA"),
     ["spec.reference", "value_field", "Fix:"]),
    ("reference-ignore-text", _set("reference.ignore_labels", "zero"),
     ["spec.reference.ignore_labels", "zero", "Fix:"]),
    # --- outputs and compute ---
    ("store-http", _set("outputs.store", "https://example.org/runs/x"),
     ["spec.outputs.store", "https://example.org/runs/x", "Fix:"]),
    ("outputs-unknown-key", _set("outputs.stor", "/tmp/x"),
     ["spec.outputs.stor", "did you mean", "Fix:"]),
    ("workers-0", _set("compute.workers", 0), ["spec.compute.workers", "0", "Fix:"]),
    ("threads-0", _set("compute.threads_per_worker", 0),
     ["spec.compute.threads_per_worker", "0", "Fix:"]),
    ("memory-limit-text", _set("compute.memory_limit", "lots"),
     ["spec.compute.memory_limit", "lots", "Fix:"]),
    ("chunk-size-0", _set("compute.chunk_size", 0), ["spec.compute.chunk_size", "0", "Fix:"]),
    ("cluster-unknown", _set("compute.cluster", "slurm"),
     ["spec.compute.cluster", "slurm", "Fix:"]),
    ("address-without-address", _set("compute.cluster", "address"),
     ["spec.compute", "address", "Fix:"]),
    ("retries-negative", _set("compute.retries", -1), ["spec.compute.retries", "-1", "Fix:"]),
    ("spec-unknown-key", _set("sensorz", []), ["spec.sensorz", "did you mean", "Fix:"]),
]  # fmt: skip

# Faults of the YAML text itself: (id, text edit, words)
TEXT_CASES: list[tuple[str, Callable[[str], str], list[str]]] = [
    ("duplicate-outputs", lambda t: t + "  outputs:\n    store: /tmp/elsewhere\n",
     ["'outputs'", "given twice", "lines", "Fix:"]),
    ("duplicate-nested", lambda t: t.replace("    seed: 0\n", "    seed: 0\n    seed: 1\n"),
     ["'seed'", "given twice", "Fix:"]),
    ("nul-byte", lambda t: t.replace("task: classification", "task: classi\x00fication"),
     ["'\\x00'", "line", "column", "Fix:"]),
    ("tab-indent", lambda t: t.replace("\n  period:", "\n\tperiod:"),
     ["not valid YAML", "line", "Fix:"]),
    ("unclosed-bracket", lambda t: t.replace("task: classification", "task: [classification"),
     ["not valid YAML", "line", "Fix:"]),
    ("a-list", lambda t: "- just\n- a list\n", ["YAML mapping", "list", "Fix:"]),
    ("wrong-kind", lambda t: t.replace("kind: SitsRun", "kind: SitsJob"),
     ["kind", "SitsJob", "Fix:"]),
    ("no-metadata-name", lambda t: t.replace("  name: slovenia-demo\n", ""),
     ["metadata", "Fix:"]),
]  # fmt: skip


def _demo_data() -> dict[str, Any]:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data["spec"]["sensors"][0]["catalog"]["url"] = str(DEMO_DIR / "catalog" / "catalog.json")
    data["spec"]["reference"]["path"] = str(DEMO_DIR / "reference" / "lulc.gpkg")
    return data


def _refused(tmp_path: Path, text: str, words: list[str]) -> None:
    manifest = tmp_path / "run.yaml"
    manifest.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["--log-format", "text", "run", str(manifest)])
    output = result.output
    assert result.exit_code == 2, output[-3000:]
    assert "Traceback" not in output
    flat = " ".join(output.split())
    for word in words:
        assert word in flat, (word, flat[-2000:])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["run.yaml"]  # nothing written
    REFUSED.append(manifest.name)


@pytest.mark.parametrize(("edit", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_manifest_is_refused_before_anything_is_written(
    tmp_path: Path, edit: Edit, words: list[str]
) -> None:
    data = copy.deepcopy(_demo_data())
    data["spec"]["outputs"]["store"] = str(tmp_path / "store")
    edit(data["spec"])
    _refused(tmp_path, yaml.safe_dump(data), words)


@pytest.mark.parametrize(
    ("edit", "words"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES]
)
def test_a_malformed_yaml_text_is_refused_before_anything_is_written(
    tmp_path: Path, edit: Callable[[str], str], words: list[str]
) -> None:
    data = _demo_data()
    data["spec"]["outputs"]["store"] = str(tmp_path / "store")
    text = yaml.safe_dump(data, sort_keys=False)
    assert edit(text) != text  # the fault is there
    _refused(tmp_path, edit(text), words)


def test_the_suite_holds_at_least_60_malformed_manifests() -> None:
    assert len(CASES) + len(TEXT_CASES) >= 60
