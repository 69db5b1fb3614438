"""The SitsRun CRD: generated from the manifest model, structural, accepted by the Kubernetes
schemas, in step with the committed copies, and as strict as the model where it can be."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipeline.k8s import crd
from pipeline.k8s.crd import (
    as_json_schema,
    build_crd,
    crd_problems,
    crd_yaml,
    status_schema,
    structural_problems,
    structural_schema,
)
from pipeline.manifest import RunSpec

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"  # the oldest Kubernetes the chart supports with these schemas at hand
EXAMPLES = [
    REPO / "examples" / "slovenia" / "run.yaml",
    REPO / "deploy" / "examples" / "demo-run.yaml",
    REPO / "deploy" / "examples" / "production-s2-theia.yaml",
]


def openapi(definition: dict[str, Any] | None = None) -> dict[str, Any]:
    definition = definition or build_crd()
    return dict(definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_the_crd_is_structural_and_valid_for_kubernetes() -> None:
    definition = build_crd()
    assert structural_problems(openapi(definition)) == []
    kubernetes_validate.validate(definition, K8S_VERSION, strict=True)
    names = definition["spec"]["names"]
    assert (definition["spec"]["group"], names["kind"], names["plural"]) == (
        "sitsflow.dev",
        "SitsRun",
        "sitsruns",
    )
    assert "sr" in names["shortNames"]
    version = definition["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}


def test_printer_columns_point_at_status_fields() -> None:
    columns = {c["name"]: c for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    default_columns = [n for n, c in columns.items() if "priority" not in c]
    assert default_columns == ["Phase", "Progress", "Tiles", "Age"]
    fields = status_schema()["properties"]
    for column in columns.values():
        head, _, leaf = column["jsonPath"].lstrip(".").partition(".")
        assert (
            leaf in fields
            if head == "status"
            else column["jsonPath"] == ".metadata.creationTimestamp"
        )


def test_every_spec_field_of_the_model_is_in_the_crd() -> None:
    """Generic: whatever fields the model has (it grows), the CRD has them, with descriptions."""
    spec = openapi()["properties"]["spec"]

    def walk(model: type[BaseModel], schema: dict[str, Any], path: str) -> None:
        for name, info in model.model_fields.items():
            assert name in schema["properties"], f"{path}.{name} is missing from the CRD"
            if info.description:
                assert schema["properties"][name]["description"] == info.description

    walk(RunSpec, spec, "spec")


def test_committed_crd_copies_match_the_model() -> None:
    """Fails when the manifest model changed and the CRD was not regenerated."""
    text = crd_yaml()
    for relative in crd.CRD_FILES:
        committed = (REPO / relative).read_text(encoding="utf-8")
        assert committed == text, (
            f"{relative} is out of date: run `python -m pipeline.k8s.crd --write`"
        )
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.k8s.crd", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_check_reports_drift(tmp_path: Path) -> None:
    for relative in crd.CRD_FILES:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(crd_yaml().replace("minItems: 1", "minItems: 2"))
    assert crd.main(["--check", "--root", str(tmp_path)]) == 1
    assert crd.main(["--write", "--root", str(tmp_path)]) == 0
    assert crd.main(["--check", "--root", str(tmp_path)]) == 0


# --- the conversion, on a model with every construct pydantic emits ----------------------------


class Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["a"]
    size: int = Field(1, gt=0, lt=10, description="A size.")


class Other(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # allows lookarounds
    kind: Literal["b"]
    url: str = Field(pattern=r"^s3://(?!reserved)")


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    children: list[Node] = Field(default_factory=list)


class Everything(BaseModel):
    """A model with every shape the manifest may grow."""

    model_config = ConfigDict(extra="forbid")
    optional_text: str | None = Field(None, description="Nullable.")
    choice: Literal["x", "y"] = "x"
    pair: tuple[float, float] | None = None
    mixed_tuple: tuple[int, str] = (1, "a")
    by_name: dict[str, Leaf] = Field(default_factory=dict, min_length=1)
    free: dict[str, Any] = Field(default_factory=dict)
    anything: Any = None
    union: Annotated[Leaf | Other, Field(discriminator="kind")]
    int_or_str: int | str = 1
    number: int | float = 2
    tags: set[str] = Field(default_factory=set)
    when: date
    tree: Node = Field(default_factory=Node)
    geometry: tuple[float, float, float, float] | dict[str, Any] | None = None


def test_conversion_handles_every_pydantic_shape() -> None:
    schema = structural_schema(Everything.model_json_schema())
    assert structural_problems({"type": "object", "properties": {"spec": schema}}) == []
    p = schema["properties"]
    assert p["optional_text"] == {"type": "string", "nullable": True, "description": "Nullable."}
    assert p["choice"]["enum"] == ["x", "y"] and p["choice"]["default"] == "x"
    assert p["pair"]["items"] == {"type": "number"} and p["pair"]["minItems"] == 2
    assert p["mixed_tuple"]["items"] == {"x-kubernetes-int-or-string": True}
    assert p["by_name"]["additionalProperties"]["properties"]["size"] == {
        "type": "integer",
        "description": "A size.",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 10,
        "exclusiveMaximum": True,
        "default": 1,
    }
    assert p["by_name"]["minProperties"] == 1
    assert p["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert p["anything"]["x-kubernetes-preserve-unknown-fields"] is True
    union = p["union"]
    assert union["type"] == "object" and union["properties"]["kind"]["enum"] == ["a", "b"]
    assert "pattern" not in union["properties"]["url"]  # a lookahead: RE2 cannot run it
    assert union["required"] == ["kind"]  # required by every variant
    assert p["int_or_str"]["x-kubernetes-int-or-string"] is True
    assert p["number"]["type"] == "number"
    assert p["tags"]["x-kubernetes-list-type"] == "set"
    assert p["when"] == {"type": "string", "format": "date"}
    assert p["tree"]["properties"]["children"]["items"]["x-kubernetes-preserve-unknown-fields"]
    assert p["geometry"]["x-kubernetes-preserve-unknown-fields"] is True
    assert p["geometry"]["nullable"] is True


def test_structural_check_finds_what_the_api_server_refuses() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "b": {"type": "object", "properties": {}, "additionalProperties": False},
            "c": {"type": "string", "format": "path"},
            "d": {"type": "array", "prefixItems": [{"type": "string"}]},
            "e": {"type": "string", "default": None},
        },
    }
    problems = "\n".join(structural_problems(bad))
    for expected in (
        ".a: keywords the API server refuses: ['anyOf']",
        ".a: no type",
        ".b: additionalProperties: false",
        ".c: unknown format 'path'",
        ".d: an array without one items schema",
        ".e: a null default",
    ):
        assert expected in problems


def test_defaults_in_the_crd_are_valid_for_their_own_schema() -> None:
    """The API server refuses a CRD whose defaults break its own schema."""

    def walk(schema: dict[str, Any], path: str) -> None:
        if "default" in schema:
            jsonschema.Draft4Validator(as_json_schema(schema)).validate(schema["default"])
        for name, sub in (schema.get("properties") or {}).items():
            walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(schema[key], f"{path}[{key}]")

    walk(openapi()["properties"]["spec"], "spec")


# --- manifests against the CRD ---------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_manifests_pass_the_crd_and_the_model(path: Path) -> None:
    assert crd.validate_files([path]) == []


def demo() -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy" / "examples" / "demo-run.yaml").read_text())


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("spec", "compute", "workerz"), 3, "'workerz' was unexpected"),
        (("spec", "compute", "workers"), "many", "'many' is not of type 'integer'"),
        (("spec", "compute", "workers"), 0, "0 is less than the minimum of 1"),
        (("spec", "compute", "memory_limit"), "lots", "does not match"),
        (("spec", "task"), "segmentation", "'segmentation' is not one of"),
        (("spec", "sensors"), [], "[] should be non-empty"),
        (("spec", "period", "start"), None, "None is not of type 'string'"),
    ],
)
def test_the_crd_refuses_what_the_model_refuses(
    path: tuple[str, ...], value: Any, expected: str
) -> None:
    document = demo()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    problems = crd_problems(document)
    assert any(expected in p for p in problems), problems


def test_the_crd_accepts_defaults_left_out() -> None:
    document = demo()
    del document["spec"]["compute"]
    del document["spec"]["sampling"]
    assert crd_problems(document) == []


def test_status_the_operator_writes_fits_the_status_schema() -> None:
    schema = as_json_schema(status_schema())
    status = {
        "phase": "Running",
        "stage": "cube",
        "progress": "42%",
        "tilesDone": 3,
        "tilesTotal": 12,
        "tiles": "3/12",
        "outputs": {"labels": "s3://b/maps/labels.tif"},
        "observedGeneration": 2,
        "startTime": "2026-01-01T00:00:00Z",
    }
    jsonschema.Draft4Validator(schema).validate(status)
    wrong = copy.deepcopy(status) | {"phase": "Done", "progress": "142%"}
    assert len(list(jsonschema.Draft4Validator(schema).iter_errors(wrong))) == 2
