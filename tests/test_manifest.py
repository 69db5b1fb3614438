"""The run manifest: valid files load and normalize; malformed ones are refused with the field path,
the bad value and a fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import ManifestError
from pipeline.manifest import RunManifest, json_schema, load_manifest, parse_manifest
from tests.conftest import DEMO_DIR, DEMO_MANIFEST


def demo_data() -> dict[str, Any]:
    return yaml.safe_load(DEMO_MANIFEST.read_text())


def parse(data: Any) -> RunManifest:
    return parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR, source="test.yaml")


def test_demo_manifest_loads_and_resolves_paths() -> None:
    manifest = load_manifest(DEMO_MANIFEST)
    spec = manifest.spec
    assert manifest.name == "slovenia-demo"
    assert spec.sensors[0].catalog.url == str(DEMO_DIR / "catalog" / "catalog.json")
    assert spec.reference.path == str(DEMO_DIR / "reference" / "lulc.gpkg")
    assert Path(spec.outputs.store).is_absolute()
    assert spec.compute.chunk_size == 64


def test_urls_are_kept_as_they_are() -> None:
    data = demo_data()
    data["spec"]["sensors"][0]["catalog"]["url"] = "s3://bucket/catalog.json"
    data["spec"]["outputs"]["store"] = "s3://bucket/runs/x"
    spec = parse(data).spec
    assert spec.sensors[0].catalog.url == "s3://bucket/catalog.json"
    assert spec.outputs.store == "s3://bucket/runs/x"


def test_defaults_fill_in() -> None:
    data = demo_data()
    for key in ("sampling", "model", "compute", "task"):
        del data["spec"][key]
    spec = parse(data).spec
    assert spec.model.estimator == "sklearn.ensemble.RandomForestClassifier"
    assert spec.sampling.validation_fraction == 0.3
    assert spec.compute.cluster == "local"


def test_json_schema_has_every_section() -> None:
    schema = json_schema()
    assert {"period", "sensors", "reference", "outputs", "compute"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

# (where to change, new value, field path expected in the message, words expected in the message)
MALFORMED = [
    ("spec.period.start", "2017-13-45", "spec.period.start", "date"),
    ("spec.period.end", "2016-01-01", "spec.period", "the period is empty"),
    ("spec.sampling.validation_fraction", 1.5, "spec.sampling.validation_fraction", "less than 1"),
    ("spec.sampling.validation_fraction", 0, "spec.sampling.validation_fraction", "greater than 0"),
    ("spec.compute.workers", 0, "spec.compute.workers", "greater than or equal to 1"),
    ("spec.compute.chunk_size", 100, "spec.compute.chunk_size", "multiple of 16"),
    ("spec.compute.memory_limit", "lots", "spec.compute.memory_limit", "4GiB"),
    ("spec.compute.cluster", "slurm", "spec.compute.cluster", "'local'"),
    ("spec.task", "segmentation", "spec.task", "classification"),
    ("spec.sensors", [], "spec.sensors", "at least 1"),
    ("spec.sensors.0.name", "Sentinel 2", "spec.sensors[0].name", "pattern"),
    ("spec.sensors.0.bands", {}, "spec.sensors[0].bands", "at least 1"),
    ("spec.sensors.0.bands", {"NDVI": {"asset": "ndvi"}}, "spec.sensors[0].bands", "lowercase"),
    ("spec.sensors.0.date_step_days", 0, "spec.sensors[0].date_step_days", "greater than"),
    ("spec.sensors.0.masks.0", {"asset": "cloud"}, "spec.sensors[0].masks[0]", "needs a rule"),
    ("spec.sensors.0.masks.0.invalid_bits", [40], "spec.sensors[0].masks[0].invalid_bits[0]", "31"),
    ("spec.sensors.0.catalog.kind", "ftp", "spec.sensors[0].catalog.kind", "'static'"),
    ("spec.sensors.0.catalog.url", _DELETE, "spec.sensors[0].catalog.url", "Field required"),
    ("spec.sensors.0.catalog.urll", "x", "spec.sensors[0].catalog.urll", "did you mean 'url'"),
    ("spec.referense", {}, "spec.referense", "did you mean 'reference'"),
    ("spec.reference", _DELETE, "spec.reference", "Field required"),
    ("spec.model.estimator", "not a path!", "spec.model.estimator", "pattern"),
    ("spec.model.params", [1, 2], "spec.model.params", "dictionary"),
    ("spec.area.crs", "EPSG:32633", "spec.area", "together"),
    (
        "spec.area",
        {"crs": "EPSG:999999", "resolution": 10, "bbox": [0, 0, 1, 1]},
        "spec.area",
        "crs",
    ),
    (
        "spec.area",
        {"crs": "EPSG:32633", "resolution": 10, "bbox": [5, 0, 1, 1]},
        "spec.area",
        "empty",
    ),
    ("spec.features.indices", ["ndvi"], "spec", "needs bands ['red', 'nir']"),
    ("spec.outputs.store", "", "spec.outputs.store", "at least 1"),
    ("metadata.name", "My_Run", "metadata.name", "pattern"),
    ("kind", "PipelineRun", "kind", "SitsRun"),
    ("apiVersion", "v1", "apiVersion", "sitsflow.dev/v1alpha1"),
]


@pytest.mark.parametrize(("where", "value", "field", "words"), MALFORMED)
def test_malformed_manifest_names_field_and_fix(
    where: str, value: Any, field: str, words: str
) -> None:
    data = copy.deepcopy(demo_data())
    _set(data, where, value)
    with pytest.raises(ManifestError) as info:
        parse(data)
    message = str(info.value)
    assert field in message
    assert words in message
    assert "Fix:" in message  # every problem says how to fix it


def test_duplicate_sensor_names() -> None:
    data = demo_data()
    data["spec"]["sensors"].append(copy.deepcopy(data["spec"]["sensors"][0]))
    with pytest.raises(ManifestError, match=r"sensor names \['s2'\] appear more than once"):
        parse(data)


def test_several_problems_are_all_reported() -> None:
    data = demo_data()
    data["spec"]["compute"]["workers"] = -1
    data["spec"]["sampling"]["seed"] = "abc"
    with pytest.raises(ManifestError) as info:
        parse(data)
    assert "2 problem(s)" in str(info.value)
    assert "spec.compute.workers" in str(info.value)
    assert "spec.sampling.seed" in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("spec: [unclosed", "not valid YAML at line 1"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
    ],
)
def test_not_a_mapping(text: str, words: str) -> None:
    with pytest.raises(ManifestError, match=words):
        parse_manifest(text, base_dir=DEMO_DIR, source="test.yaml")


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.yaml")
