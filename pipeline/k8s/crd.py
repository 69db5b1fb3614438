"""The SitsRun CustomResourceDefinition, generated from the run manifest's pydantic schema.

The manifest model (``pipeline.manifest.RunSpec``) is the only schema: this module turns its JSON
Schema into a Kubernetes *structural* OpenAPI v3 schema (``$ref`` inlined, unions folded, only the
keywords the API server accepts), adds the status the operator writes, and wraps both in a CRD.
Kubernetes checks types, ranges, enums and patterns at ``kubectl apply``; the operator then runs the
full pydantic validation (cross-field rules) and rejects what the CRD cannot express.

(Over 600 lines on purpose: the conversion, the CRD built from it and the offline check that
reads a document as the API server would are one schema's three sides, kept in one place.)

Regenerate the committed copies after changing the manifest model::

    python -m pipeline.k8s.crd --write      # helm/sitsflow/crds/ and deploy/crd.yaml
    python -m pipeline.k8s.crd --check      # exit 1 when they differ from the model (CI)
"""

from __future__ import annotations

import argparse
import copy
import difflib
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from pipeline.k8s import CATEGORIES, CRD_NAME, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from pipeline.manifest import RunSpec

Schema = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = (
    Path("helm/sitsflow/crds/sitsruns.sitsflow.dev.yaml"),
    Path("deploy/crd.yaml"),
)
PHASES = ("Pending", "Running", "Succeeded", "Failed")

# Keywords of the API server's JSONSchemaProps that we carry over as they are.
_KEPT = (
    "description",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
)
# Formats the API server validates (others are dropped: they would be ignored or refused).
_FORMATS = frozenset(
    {
        *("bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac"),
        *("uuid", "uuid3", "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn"),
        *("hexcolor", "rgbcolor", "byte", "password", "date", "duration", "datetime", "date-time"),
    }
)
# Regex syntax Python has and the API server's RE2 engine lacks: lookarounds, backreferences.
_RE2_UNSUPPORTED = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]|\(\?P=")
_SCALARS = frozenset({"string", "integer", "number", "boolean"})
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_INT_OR_STRING = "x-kubernetes-int-or-string"


# --- JSON Schema (pydantic) -> structural OpenAPI v3 schema -----------------------------------


def structural_schema(schema: Mapping[str, Any]) -> Schema:
    """A Kubernetes structural schema equivalent to (or, for unions, looser than) ``schema``."""
    defs = dict(schema.get("$defs", {}))
    return _convert(schema, defs, ())


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], trail: tuple[str, ...]) -> Schema:
    node = dict(node)
    if "$ref" in node:
        name = str(node.pop("$ref")).rsplit("/", 1)[-1]
        if name in trail:  # a recursive model: structural schemas cannot recurse
            return {_PRESERVE: True, "type": "object", **_described(node)}
        target = _convert(defs[name], defs, (*trail, name))
        return _overlay(target, _convert_siblings(node, defs, trail))
    if len(node.get("allOf", ())) == 1:
        inner = _convert(node.pop("allOf")[0], defs, trail)
        return _overlay(inner, _convert_siblings(node, defs, trail))
    for key in ("anyOf", "oneOf"):
        if key in node:
            variants = node.pop(key)
            node.pop("discriminator", None)
            return _overlay(_union(variants, defs, trail), _convert_siblings(node, defs, trail))
    if isinstance(node.get("type"), list):
        variants = [{**node, "type": t} for t in node["type"]]
        return _union(variants, defs, trail)
    return _convert_plain(node, defs, trail)


def _convert_siblings(
    node: Mapping[str, Any], defs: Mapping[str, Any], trail: tuple[str, ...]
) -> Schema:
    """Keywords written beside a ``$ref`` or a union (description, default)."""
    out = _described(node)
    if node.get("default") is not None:
        out["default"] = node["default"]
    return out


def _described(node: Mapping[str, Any]) -> Schema:
    return {"description": node["description"]} if "description" in node else {}


def _overlay(base: Schema, extra: Schema) -> Schema:
    out = dict(base)
    out.update(extra)
    return out


def _convert_plain(
    node: Mapping[str, Any], defs: Mapping[str, Any], trail: tuple[str, ...]
) -> Schema:
    out: Schema = {}
    kind = node.get("type")
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    if kind is None and "enum" in node:
        kind = _type_of_values(node["enum"])
    if kind is not None:
        out["type"] = kind
    for key in _KEPT:
        if key in node:
            out[key] = node[key]
    if "pattern" in out and _RE2_UNSUPPORTED.search(out["pattern"]):
        del out["pattern"]  # the API server's RE2 cannot run it; pydantic still checks it
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        # JSON Schema 2020-12 gives the bound; OpenAPI v3.0 wants the bound and a flag.
        value = node.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
    if node.get("format") in _FORMATS:
        out["format"] = node["format"]
    if "enum" in node:
        values = [v for v in node["enum"] if v is not None]
        out["enum"] = values
        if len(values) < len(node["enum"]):
            out["nullable"] = True
    if kind == "object":
        out.update(_object_parts(node, defs, trail))
    elif kind == "array":
        out.update(_array_parts(node, defs, trail))
    elif kind is None or kind == "null":
        # Any value (an untyped field): the API server keeps it as it is; pydantic checks it.
        out = {**_described(node), _PRESERVE: True}
        if kind == "null":
            out["nullable"] = True
    if node.get("default") is not None:
        out["default"] = node["default"]
    return out


def _type_of_values(values: Sequence[Any]) -> str | None:
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
    }
    kinds = {names.get(type(v)) for v in values if v is not None}
    if kinds == {"integer", "number"}:
        return "number"
    return kinds.pop() if len(kinds) == 1 else None


def _object_parts(
    node: Mapping[str, Any], defs: Mapping[str, Any], trail: tuple[str, ...]
) -> Schema:
    out: Schema = {}
    properties = node.get("properties") or {}
    extra = node.get("additionalProperties")
    if properties:
        out["properties"] = {k: _convert(v, defs, trail) for k, v in properties.items()}
        if node.get("required"):
            out["required"] = list(node["required"])
        if extra not in (None, False):
            # Both together are not structural: keep the named ones and accept any other key.
            out[_PRESERVE] = True
    elif isinstance(extra, Mapping) and extra:
        out["additionalProperties"] = _convert(extra, defs, trail)
    elif extra is not False:
        # A free-form mapping (e.g. estimator parameters).
        out[_PRESERVE] = True
    return out


def _array_parts(
    node: Mapping[str, Any], defs: Mapping[str, Any], trail: tuple[str, ...]
) -> Schema:
    out: Schema = {}
    if "prefixItems" in node:  # a tuple: one items schema that admits every position
        out["items"] = _union(node["prefixItems"], defs, trail)
    elif isinstance(node.get("items"), Mapping) and node["items"]:
        out["items"] = _convert(node["items"], defs, trail)
    else:
        out["items"] = {_PRESERVE: True}
    if node.get("uniqueItems") and out["items"].get("type") in _SCALARS:
        # uniqueItems is refused by the API server; a set-typed list says the same thing.
        out["x-kubernetes-list-type"] = "set"
    return out


def _union(
    variants: Sequence[Mapping[str, Any]], defs: Mapping[str, Any], trail: tuple[str, ...]
) -> Schema:
    """One structural schema admitting every variant (the API server forbids typed unions)."""
    nullable = any(v.get("type") == "null" for v in variants)
    converted = [_convert(v, defs, trail) for v in variants if v.get("type") != "null"]
    nullable = nullable or any(c.get("nullable") for c in converted)
    concrete = [{k: v for k, v in c.items() if k != "nullable"} for c in converted]
    if not concrete:
        merged: Schema = {_PRESERVE: True}
    elif len(concrete) == 1:
        merged = concrete[0]
    else:
        merged = _merge(concrete)
    if nullable:
        merged["nullable"] = True
        merged.pop("default", None)
    return merged


def _merge(schemas: list[Schema]) -> Schema:
    kinds = {s.get("type") for s in schemas}
    if None in kinds:
        return _loose(schemas)
    if kinds == {"integer", "string"}:
        return {_INT_OR_STRING: True, **_common(schemas, ("description",))}
    if kinds <= {"integer", "number"} and len(kinds) == 2:
        schemas = [{**s, "type": "number"} for s in schemas]
        kinds = {"number"}
    if len(kinds) != 1:
        return _loose(schemas)
    kind = kinds.pop()
    out: Schema = {"type": kind, **_common(schemas, (*_KEPT, "format", "default"))}
    if kind in _SCALARS and all("enum" in s for s in schemas):
        out["enum"] = _unique(v for s in schemas for v in s["enum"])
    if kind == "array":
        out["items"] = _merge([s["items"] for s in schemas])
    elif kind == "object":
        out.update(_merge_objects(schemas))
    return out


def _merge_objects(schemas: list[Schema]) -> Schema:
    out: Schema = {}
    if any(s.get(_PRESERVE) for s in schemas):
        out[_PRESERVE] = True
    named = [s for s in schemas if "properties" in s]
    if named:
        keys = _unique(k for s in named for k in s["properties"])
        out["properties"] = {
            k: _merge([s["properties"][k] for s in named if k in s["properties"]])
            if sum(k in s["properties"] for s in named) > 1
            else next(s["properties"][k] for s in named if k in s["properties"])
            for k in keys
        }
        required = set.intersection(*(set(s.get("required", ())) for s in schemas))
        if required:
            out["required"] = [k for k in keys if k in required]
        if len(named) < len(schemas):
            out[_PRESERVE] = True
    else:
        values = [s["additionalProperties"] for s in schemas if "additionalProperties" in s]
        if len(values) == len(schemas):
            out["additionalProperties"] = _merge(values)
        else:
            out[_PRESERVE] = True
    return out


def _common(schemas: list[Schema], keys: Sequence[str]) -> Schema:
    """The keywords every variant states with the same value (a looser union stays correct)."""
    first = schemas[0]
    return {k: first[k] for k in keys if k in first and all(s.get(k) == first[k] for s in schemas)}


def _loose(schemas: list[Schema]) -> Schema:
    return {_PRESERVE: True, **_common(schemas, ("description",))}


def _unique(values: Any) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


# --- what the operator writes -----------------------------------------------------------------


def status_schema() -> Schema:
    """The ``status`` the operator maintains (camelCase, as Kubernetes API conventions ask)."""

    def text(description: str) -> Schema:
        return {"type": "string", "description": description}

    def count(description: str) -> Schema:
        return {"type": "integer", "minimum": 0, "description": description}

    return {
        "type": "object",
        "description": "What the operator observed about the run. Written by the operator only.",
        "properties": {
            "phase": {
                "type": "string",
                "enum": list(PHASES),
                "description": "Pending (accepted, starting), Running (the driver runs), "
                "Succeeded (every output written) or Failed (see lastError).",
            },
            "stage": text("The stage the driver is in (discover, cube, samples, train, ...)."),
            "progress": {
                "type": "string",
                "pattern": r"^(100|[1-9]?[0-9])%$",
                "description": "Share of the run's work done, e.g. 42%.",
            },
            "tilesDone": count("Output tiles whose maps are written."),
            "tilesTotal": count("Output tiles of the run."),
            "tiles": text("Tiles done out of the total, e.g. 3/12 (for kubectl get)."),
            "message": text("What happens now, in one line."),
            "lastError": text("The last error, with what to fix; empty when none."),
            "dashboard": text("The dask dashboard's in-cluster URL (see the dashboard docs)."),
            "dashboardService": text("The scheduler Service that serves the dashboard."),
            "daskCluster": text("Name of the DaskCluster that runs the workers."),
            "driverJob": text("Name of the Job that runs the driver (`sitsflow run`)."),
            "outputs": {
                "type": "object",
                "description": "Where the run's outputs are, by name (map, report, summary...).",
                "additionalProperties": {"type": "string"},
            },
            "startTime": {"type": "string", "format": "date-time", "description": "Run start."},
            "completionTime": {
                "type": "string",
                "format": "date-time",
                "description": "When the run succeeded or failed.",
            },
            "observedGeneration": count("The spec generation the status describes."),
            "conditions": {
                "type": "array",
                "description": "Planned, ClusterReady, Progressing, Succeeded and Failed, with "
                "reasons (Kubernetes API conventions).",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status", "lastTransitionTime"],
                    "properties": {
                        "type": text("Planned, ClusterReady, Progressing, Succeeded or Failed."),
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": text("Why, in CamelCase (e.g. Unschedulable, DriverFailed)."),
                        "message": text("Why, in words, with what to do."),
                        "lastTransitionTime": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the status last changed.",
                        },
                        "observedGeneration": count("The spec generation it describes."),
                    },
                },
            },
        },
    }


def printer_columns() -> list[Schema]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
        {"name": "Tiles", "type": "string", "jsonPath": ".status.tiles"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Stage", "type": "string", "jsonPath": ".status.stage", "priority": 1},
        {"name": "Dashboard", "type": "string", "jsonPath": ".status.dashboard", "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]


def build_crd(model: type[BaseModel] = RunSpec) -> Schema:
    """The whole CustomResourceDefinition (apiextensions.k8s.io/v1) as a dict."""
    spec = structural_schema(model.model_json_schema())
    spec["description"] = (
        "The run: what to map, from which data, with which model, where to write. Same keys as "
        "the spec of a sitsflow run manifest (see `sitsflow schema`)."
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "sitsflow",
                "app.kubernetes.io/component": "crd",
                "app.kubernetes.io/part-of": "sitsflow",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A sitsflow run: satellite image time series to maps.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = (
    "# GENERATED by `python -m pipeline.k8s.crd --write` from pipeline.manifest.RunSpec.\n"
    "# Do not edit: change the manifest model and regenerate (CI checks the two agree).\n"
)


def crd_yaml(model: type[BaseModel] = RunSpec) -> str:
    body = yaml.safe_dump(build_crd(model), sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


# --- checks -----------------------------------------------------------------------------------

_JSON_SCHEMA_PROPS = frozenset(
    {
        *_KEPT,
        "type",
        "format",
        "title",
        "default",
        "enum",
        "nullable",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "example",
        "externalDocs",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-validations",
    }
)


def structural_problems(schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Why ``schema`` is not a structural schema the API server accepts (empty: it is)."""
    problems: list[str] = []
    where = path or "(root)"
    unknown = sorted(set(schema) - _JSON_SCHEMA_PROPS)
    if unknown:
        problems.append(f"{where}: keywords the API server refuses: {unknown}")
    if "type" not in schema and not (schema.get(_PRESERVE) or schema.get(_INT_OR_STRING)):
        problems.append(f"{where}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{where}: properties and additionalProperties together")
    if schema.get("additionalProperties") is False:
        problems.append(f"{where}: additionalProperties: false")
    if schema.get("type") == "array" and not isinstance(schema.get("items"), Mapping):
        problems.append(f"{where}: an array without one items schema")
    if schema.get("format") is not None and schema["format"] not in _FORMATS:
        problems.append(f"{where}: unknown format {schema['format']!r}")
    if "pattern" in schema and _RE2_UNSUPPORTED.search(schema["pattern"]):
        problems.append(f"{where}: pattern {schema['pattern']!r} needs more than RE2")
    if "default" in schema and schema["default"] is None:
        problems.append(f"{where}: a null default")
    for name, sub in (schema.get("properties") or {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        problems += structural_problems(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        problems += structural_problems(schema["additionalProperties"], f"{path}.*")
    return problems


def as_json_schema(schema: Mapping[str, Any]) -> Schema:
    """An OpenAPI v3 CRD schema as JSON Schema draft 4, with the API server's strictness.

    Kubernetes refuses unknown fields (``kubectl apply`` validates strictly), so objects with named
    properties get ``additionalProperties: false`` unless they preserve unknown fields.
    """
    out: Schema = {}
    for key, value in schema.items():
        if key in ("nullable", _PRESERVE, _INT_OR_STRING) or key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {k: as_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = as_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if schema.get(_INT_OR_STRING):
        out["type"] = ["integer", "string"]
    if "properties" in schema and not schema.get(_PRESERVE):
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if schema.get("nullable") and "type" in out:
        kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*kinds, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _as_api_json(value: Any) -> Any:
    """A YAML document as kubectl sends it: dates and times become strings."""
    if isinstance(value, dict):
        return {str(k): _as_api_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_api_json(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def crd_problems(document: Mapping[str, Any], crd: Mapping[str, Any] | None = None) -> list[str]:
    """What the API server would refuse in a SitsRun, checked offline against the CRD's schema."""
    import jsonschema

    crd = crd or build_crd()
    schema = as_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft4Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(_as_api_json(document)), key=lambda e: e.path):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"{where}: {error.message}")
    return problems


def validate_files(paths: Sequence[Path]) -> list[str]:
    """Check every SitsRun in the files twice: the CRD's schema, then the manifest model."""
    from pipeline.errors import ManifestError
    from pipeline.manifest import parse_manifest

    problems = []
    for path in paths:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        runs = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
        if not runs:
            problems.append(f"{path}: no {KIND} in the file")
        for run in runs:
            name = (run.get("metadata") or {}).get("name", "?")
            problems += [f"{path} ({name}): CRD: {p}" for p in crd_problems(run)]
            try:
                parse_manifest(yaml.safe_dump(run), base_dir=path.parent, source=f"{path} ({name})")
            except ManifestError as exc:
                problems.append(str(exc))
    return problems


# --- command line -----------------------------------------------------------------------------


def _stale(root: Path, text: str) -> list[str]:
    """A unified diff for each committed CRD copy that differs from ``text``."""
    diffs = []
    for rel in CRD_FILES:
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        f"{rel} (committed)",
                        f"{rel} (generated)",
                    )
                )
                or f"{rel} is missing\n"
            )
    return diffs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.k8s.crd",
        description="Print, write or check the SitsRun CRD generated from the manifest model.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write the committed CRD copies")
    action.add_argument("--check", action="store_true", help="exit 1 if they are out of date")
    action.add_argument(
        "--validate",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="check the SitsRuns in these files against the CRD schema and the manifest model",
    )
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    if args.validate:
        problems = validate_files(args.validate)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"ok: {len(args.validate)} file(s) of valid SitsRuns", file=sys.stderr)
        return 1 if problems else 0
    text = crd_yaml()
    if args.write:
        for rel in CRD_FILES:
            target = args.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {rel}", file=sys.stderr)
        return 0
    if args.check:
        diffs = _stale(args.root, text)
        for diff in diffs:
            sys.stderr.write(diff)
        if diffs:
            print(
                "the committed SitsRun CRD differs from pipeline.manifest.RunSpec; "
                "run `python -m pipeline.k8s.crd --write` and commit the result",
                file=sys.stderr,
            )
            return 1
        print("the committed SitsRun CRD matches the manifest model", file=sys.stderr)
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
