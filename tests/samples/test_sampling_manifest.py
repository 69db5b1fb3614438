"""Manifest fields of the reference (regression, groups, regions) and sampling (strategies, runs):
valid values load, malformed ones name the field, the problem and a fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from pipeline.errors import ManifestError
from pipeline.manifest import RunManifest, json_schema, parse_manifest
from tests.conftest import DEMO_DIR, DEMO_MANIFEST


def _demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO_MANIFEST.read_text())


def _parse(data: Any) -> RunManifest:
    return parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR, source="test.yaml")


def _with(section: str, **values: Any) -> dict[str, Any]:
    data = copy.deepcopy(_demo())
    data["spec"].setdefault(section, {}).update(values)
    for key, value in values.items():
        if value is None:
            del data["spec"][section][key]
    return data


def test_demo_keeps_its_meaning() -> None:
    spec = _parse(_demo()).spec
    assert spec.reference.label_field == "LULC_ID"
    assert spec.reference.value_field is None
    assert spec.reference.regions is None
    assert spec.sampling.strategy == "all"
    assert spec.sampling.runs == 1
    assert spec.sampling.within_polygon == "random"


def test_valid_new_fields() -> None:
    data = _with(
        "reference",
        label_field=None,
        value_field="HEIGHT",
        group_field="PARCEL",
        name_field=None,
        ignore_labels=None,
        regions={"path": "regions/eco.gpkg", "field": "ZONE", "border_pixels": 5,
                 "border_rule": "vote"},
    )  # fmt: skip
    data["spec"]["task"] = "regression"  # a value_field is a regression reference
    data["spec"].pop("postprocess", None)  # the demo's map products need a label map
    data["spec"]["sampling"] = {
        "strategy": "percentage",
        "fraction": 0.25,
        "within_polygon": "periodic",
        "runs": 5,
        "max_pixels_per_polygon": 50,
    }
    spec = _parse(data).spec
    assert spec.reference.value_field == "HEIGHT"
    assert spec.reference.regions is not None
    # relative to the manifest, like the reference path
    assert spec.reference.regions.path == str(DEMO_DIR / "regions" / "eco.gpkg")
    assert spec.reference.regions.border_rule == "vote"
    assert spec.sampling.fraction == 0.25
    assert spec.sampling.runs == 5


# (section, changes, field path expected in the message, words expected in the message)
MALFORMED = [
    ("reference", {"value_field": "HEIGHT"}, "spec.reference", "got both"),
    ("reference", {"label_field": None}, "spec.reference", "got neither"),
    (
        "reference",
        {"label_field": None, "value_field": "H", "ignore_labels": None},
        "spec.reference",
        "remove name_field and ignore_labels",
    ),
    ("reference", {"regions": {"path": "r.gpkg"}}, "spec.reference.regions.field", "required"),
    (
        "reference",
        {"regions": {"path": "r.gpkg", "field": "Z", "border_pixels": -1}},
        "spec.reference.regions.border_pixels",
        "greater than or equal to 0",
    ),
    (
        "reference",
        {"regions": {"path": "r.gpkg", "field": "Z", "border_rule": "mean"}},
        "spec.reference.regions.border_rule",
        "'blend' or 'vote'",
    ),
    (
        "reference",
        {"regions": {"path": "r.gpkg", "feild": "Z"}},
        "spec.reference.regions.feild",
        "did you mean 'field'",
    ),
    ("sampling", {"strategy": "balanced"}, "spec.sampling.strategy", "'smallest_class'"),
    ("sampling", {"strategy": "percentage"}, "spec.sampling", "needs fraction"),
    ("sampling", {"strategy": "per_class_count"}, "spec.sampling", "needs count"),
    ("sampling", {"fraction": 0.5}, "spec.sampling", "set strategy: percentage"),
    ("sampling", {"count": 100}, "spec.sampling", "set strategy: per_class_count"),
    (
        "sampling",
        {"strategy": "percentage", "fraction": 1.5},
        "spec.sampling.fraction",
        "less than or equal to 1",
    ),
    (
        "sampling",
        {"strategy": "per_class_count", "count": 0},
        "spec.sampling.count",
        "greater than or equal to 1",
    ),
    ("sampling", {"within_polygon": "grid"}, "spec.sampling.within_polygon", "'periodic'"),
    ("sampling", {"runs": 0}, "spec.sampling.runs", "greater than or equal to 1"),
    ("sampling", {"runs": 1000}, "spec.sampling.runs", "less than or equal to 100"),
    ("sampling", {"max_pixels_per_polygon": 0}, "spec.sampling.max_pixels_per_polygon", "1"),
]


@pytest.mark.parametrize(("section", "changes", "field", "words"), MALFORMED)
def test_malformed_sampling_and_reference(
    section: str, changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ManifestError) as info:
        _parse(_with(section, **changes))
    message = str(info.value)
    assert field in message
    assert words in message
    assert "Fix:" in message


def test_every_new_field_is_documented() -> None:
    schema = json_schema()
    defs = schema["$defs"]
    for model in ("ReferenceSpec", "SamplingSpec", "RegionsSpec"):
        for name, field in defs[model]["properties"].items():
            assert field.get("description"), f"{model}.{name} has no description"
