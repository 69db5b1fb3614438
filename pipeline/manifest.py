"""The run manifest: one pydantic model, loaded from YAML, validated once at the edge.

A manifest is a Kubernetes-style resource::

    apiVersion: sitsflow.dev/v1alpha1
    kind: SitsRun
    metadata: {name: slovenia-demo}
    spec: {...}          # RunSpec below

so the same file can later be ``kubectl apply``-ed; the CRD's schema is generated from ``RunSpec``.
Relative local paths are resolved against the manifest's folder when it is loaded; inside the
package every path is absolute or a URL. No field holds a credential: storage credentials come from
the environment or fsspec/boto configuration.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ManifestError

API_VERSION: Literal["sitsflow.dev/v1alpha1"] = "sitsflow.dev/v1alpha1"
KIND: Literal["SitsRun"] = "SitsRun"

_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_IDENT = r"^[a-z][a-z0-9_]*$"
_IMPORT_PATH = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*)?$"
_MEMORY = r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CatalogSpec(_Strict):
    """Where a sensor's acquisitions are listed."""

    kind: Literal["static"] = Field(
        "static",
        description="Catalog type. 'static': a static STAC catalog or collection (file or URL).",
    )
    url: str = Field(
        description="Path or URL of the catalog.json / collection.json "
        "(relative paths are relative to the manifest).",
        min_length=1,
    )
    collections: list[str] = Field(
        default_factory=list,
        description="Only items of these collection ids (empty: every item of the catalog).",
    )


class BandSpec(_Strict):
    """How to read one band: its asset, the physical value scaling and its no-data value."""

    asset: str = Field(description="STAC asset key that holds the band.", min_length=1)
    scale: float = Field(1.0, description="Physical value = raw * scale + offset.")
    offset: float = Field(0.0, description="Physical value = raw * scale + offset.")
    nodata: float | None = Field(
        None, description="Raw value meaning no data (default: the file's own no-data value)."
    )


class MaskSpec(_Strict):
    """A quality layer and the rule that turns it into invalid pixels."""

    asset: str = Field(description="STAC asset key of the quality layer.", min_length=1)
    invalid_values: list[int] = Field(
        default_factory=list, description="Raw values that mark a pixel invalid (e.g. [1] = cloud)."
    )
    invalid_bits: list[Annotated[int, Field(ge=0, le=31)]] = Field(
        default_factory=list, description="Bit positions that mark a pixel invalid when set."
    )

    @model_validator(mode="after")
    def _has_rule(self) -> MaskSpec:
        if not self.invalid_values and not self.invalid_bits:
            raise ValueError(
                "a mask needs a rule; set invalid_values (e.g. [1]) or invalid_bits (e.g. [0, 3])"
            )
        return self


class SensorSpec(_Strict):
    """One sensor: its catalog, the bands to read, its quality masks and its date grid step."""

    name: str = Field(
        description="Short sensor id used in feature names (lowercase, e.g. s2).", pattern=_IDENT
    )
    catalog: CatalogSpec
    bands: dict[str, BandSpec] = Field(
        description="Bands to read, by the name they get in the cube (lowercase ids).",
        min_length=1,
    )
    masks: list[MaskSpec] = Field(
        default_factory=list, description="Quality layers; a pixel is invalid if any says so."
    )
    date_step_days: int = Field(
        10, ge=1, le=366, description="Step of the regular date grid this sensor is gap-filled on."
    )

    @field_validator("bands")
    @classmethod
    def _band_names(cls, bands: dict[str, BandSpec]) -> dict[str, BandSpec]:
        for name in bands:
            if not re.match(_IDENT, name):
                raise ValueError(
                    f"band name {name!r} is not a lowercase id (letters, digits, _); "
                    "rename it, e.g. 'ndvi'"
                )
        return bands


class PeriodSpec(_Strict):
    """The period mapped: the date grids run from start to end, inclusive."""

    start: date = Field(description="First date of the date grid (YYYY-MM-DD).")
    end: date = Field(description="Last date of the date grid (YYYY-MM-DD), after start.")

    @model_validator(mode="after")
    def _ordered(self) -> PeriodSpec:
        if self.end <= self.start:
            raise ValueError(
                f"the period is empty: end {self.end} is not after start {self.start}; "
                "set end to a date after start"
            )
        return self


class AreaSpec(_Strict):
    """The output grid. Leave every field out to use the items' own (shared) native grid."""

    crs: str | None = Field(None, description="Grid CRS, e.g. EPSG:32631.")
    resolution: float | None = Field(None, gt=0, description="Pixel size in CRS units.")
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="[left, bottom, right, top] in the grid CRS."
    )

    @model_validator(mode="after")
    def _all_or_none(self) -> AreaSpec:
        given = [self.crs is not None, self.resolution is not None, self.bbox is not None]
        if any(given) and not all(given):
            raise ValueError(
                "crs, resolution and bbox go together; set all three, or none of them to "
                "use the items' native grid"
            )
        if self.bbox is not None:
            left, bottom, right, top = self.bbox
            if right <= left or top <= bottom:
                raise ValueError(
                    f"bbox {list(self.bbox)} is empty (right must exceed left and top bottom); "
                    "give it as [left, bottom, right, top]"
                )
        if self.crs is not None:
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(self.crs)
            except CRSError:
                raise ValueError(
                    f"crs {self.crs!r} is not a known coordinate reference system; "
                    "use an EPSG code such as 'EPSG:32633'"
                ) from None
        return self


class FeaturesSpec(_Strict):
    """Features computed from the gap-filled bands (the bands themselves are always features)."""

    indices: list[Literal["ndvi", "ndwi", "brightness"]] = Field(
        default_factory=list,
        description="Spectral indices to add; ndvi needs bands red and nir, ndwi green and nir.",
    )


class ReferenceSpec(_Strict):
    """Reference polygons (or points) with their labels."""

    path: str = Field(description="GeoPackage, GeoParquet or Shapefile with the reference data.")
    layer: str | None = Field(None, description="Layer name inside a multi-layer file.")
    label_field: str = Field(description="Integer field with the class code.")
    name_field: str | None = Field(None, description="Optional field with the class name.")
    ignore_labels: list[int] = Field(
        default_factory=list, description="Class codes to leave out (e.g. 0 for 'no data')."
    )


class SamplingSpec(_Strict):
    """How reference polygons become training and validation pixels."""

    validation_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Share of each class's polygons kept for validation (split by polygon).",
    )
    seed: int = Field(0, ge=0, description="Seed of the split and the selection.")
    max_pixels_per_polygon: int | None = Field(
        None, ge=1, description="Cap of training pixels drawn from one polygon (None: all)."
    )
    min_pixels_per_class: int = Field(
        10, ge=1, description="Classes with fewer training pixels are left out with a warning."
    )


class ModelSpec(_Strict):
    """The estimator: a scikit-learn class by import path, and its parameters."""

    estimator: str = Field(
        "sklearn.ensemble.RandomForestClassifier",
        pattern=_IMPORT_PATH,
        description="Import path of a scikit-learn compatible classifier.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the estimator."
    )


class OutputsSpec(_Strict):
    """Where the run writes: one folder (the run store) for the cube, model, maps and report."""

    store: str = Field(
        description="Run store folder (relative paths are relative to the manifest).", min_length=1
    )


class ComputeSpec(_Strict):
    """The dask cluster and the chunking of the work."""

    cluster: Literal["local"] = Field("local", description="'local': a distributed.LocalCluster.")
    workers: int = Field(2, ge=1, le=512, description="Number of worker processes.")
    threads_per_worker: int = Field(1, ge=1, le=64, description="Threads in each worker.")
    memory_limit: str = Field(
        "4GiB", pattern=_MEMORY, description="Memory limit per worker, e.g. 4GiB."
    )
    chunk_size: int = Field(
        256, ge=16, le=8192, description="Side of the square chunks, in pixels."
    )
    dashboard_port: int = Field(
        8787, ge=0, le=65535, description="Dashboard port (0: any free port)."
    )

    @field_validator("chunk_size")
    @classmethod
    def _chunk_multiple(cls, size: int) -> int:
        if size % 16:
            raise ValueError(
                f"chunk_size {size} must be a multiple of 16 (COG and Zarr blocks); "
                f"try {max(16, size // 16 * 16)}"
            )
        return size


class RunSpec(_Strict):
    """Everything a run needs. This is the ``spec`` of the SitsRun custom resource."""

    task: Literal["classification"] = Field(
        "classification", description="What the run produces: 'classification' (a label map)."
    )
    period: PeriodSpec
    sensors: list[SensorSpec] = Field(min_length=1)
    area: AreaSpec = Field(default_factory=AreaSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    reference: ReferenceSpec
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    outputs: OutputsSpec
    compute: ComputeSpec = Field(default_factory=ComputeSpec)

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        names = [s.name for s in self.sensors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sensor names {dupes} appear more than once; give each a unique name")
        needs = {"ndvi": ("red", "nir"), "ndwi": ("green", "nir"), "brightness": ()}
        for index in self.features.indices:
            for sensor in self.sensors:
                missing = [b for b in needs[index] if b not in sensor.bands]
                if missing:
                    raise ValueError(
                        f"index {index!r} needs bands {list(needs[index])} but sensor "
                        f"{sensor.name!r} has no {missing}; add them to its bands or drop the index"
                    )
        return self


class Metadata(_Strict):
    name: str = Field(
        description="Run name (lowercase letters, digits and '-', as Kubernetes names).",
        pattern=_NAME,
        max_length=63,
    )
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class RunManifest(_Strict):
    """A whole manifest file: the SitsRun resource."""

    apiVersion: Literal["sitsflow.dev/v1alpha1"] = API_VERSION  # noqa: N815 (Kubernetes key)
    kind: Literal["SitsRun"] = KIND
    metadata: Metadata
    spec: RunSpec

    @property
    def name(self) -> str:
        return self.metadata.name


# --- loading -------------------------------------------------------------------------------------


def load_manifest(path: str | Path) -> RunManifest:
    """Read, validate and normalize a manifest file; raise ManifestError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"manifest file {str(path)!r} does not exist", fix="check the path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"manifest file {str(path)!r} cannot be read ({exc})",
            fix="check that it is a readable UTF-8 YAML file",
        ) from None
    return parse_manifest(text, base_dir=path.resolve().parent, source=str(path))


def parse_manifest(text: str, *, base_dir: Path, source: str = "<manifest>") -> RunManifest:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ManifestError(
            f"{source} is not valid YAML{where}: {problem}",
            fix="correct the YAML syntax (indentation, colons, quotes) at that place",
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(
            f"{source} must be a YAML mapping with apiVersion, kind, metadata and spec, "
            f"got {type(data).__name__}",
            fix="start from examples/slovenia/run.yaml",
        )
    try:
        manifest = RunManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_explain(exc, data, source)) from None
    return _resolve_paths(manifest, base_dir)


def _is_url(value: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value))


def _resolve(value: str, base_dir: Path) -> str:
    if _is_url(value):
        return value
    return str((base_dir / Path(value).expanduser()).resolve())


def _resolve_paths(manifest: RunManifest, base_dir: Path) -> RunManifest:
    spec = manifest.spec
    sensors = [
        s.model_copy(
            update={
                "catalog": s.catalog.model_copy(update={"url": _resolve(s.catalog.url, base_dir)})
            }
        )
        for s in spec.sensors
    ]
    spec = spec.model_copy(
        update={
            "sensors": sensors,
            "reference": spec.reference.model_copy(
                update={"path": _resolve(spec.reference.path, base_dir)}
            ),
            "outputs": spec.outputs.model_copy(
                update={"store": _resolve(spec.outputs.store, base_dir)}
            ),
        }
    )
    return manifest.model_copy(update={"spec": spec})


# --- error messages ------------------------------------------------------------------------------


def _field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(loc: Sequence[int | str]) -> Any:
    """The pydantic model that holds the key at the end of ``loc`` (None when unknown)."""
    current: Any = RunManifest
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _model_of(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _description(loc: Sequence[int | str]) -> str | None:
    """The field's documentation, to show what a good value looks like."""
    keys = [p for p in loc if isinstance(p, str)]
    model = _model_at([p for p in loc if not isinstance(p, int)])
    if model is None or not keys:
        return None
    info = model.model_fields.get(keys[-1])
    return info.description if info is not None else None


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _fix_for(err: Any, loc: Sequence[int | str]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        key = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{hint}remove the key or use one of: {', '.join(allowed)}"
    if kind == "missing":
        return "add this field (see examples/slovenia/run.yaml)"
    if kind == "literal_error":
        return f"use one of {ctx.get('expected')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        described = _description(loc)
        return "use a value in the allowed range" + (
            f" ({described.rstrip('.')})" if described else ""
        )
    if kind == "string_pattern_mismatch":
        described = _description(loc)
        if described:
            return f"give a value as described: {described.rstrip('.')}"
        return f"use a value matching {ctx.get('pattern')}"
    if kind.startswith(("int_", "float_", "bool_", "date_", "string_type", "dict_", "list_")):
        return "give a value of the expected type"
    if kind == "too_short":
        return "give at least one entry"
    return "correct the value"


def _explain(exc: ValidationError, data: Any, source: str) -> str:
    lines = [f"{source} is not a valid SitsRun manifest ({exc.error_count()} problem(s)):"]
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _field_path(loc)
        msg = err["msg"]
        if err["type"] == "value_error":
            # Our validators phrase their messages as "<problem>; <fix>".
            problem, _, fix = msg.removeprefix("Value error, ").rpartition("; ")
            if problem:
                lines.append(f"  - {path}: {problem}. Fix: {fix}.")
            else:
                lines.append(f"  - {path}: {fix}.")
            continue
        got = ""
        if err["type"] != "missing":
            got = f" (got {json.dumps(err.get('input'), default=str)[:80]})"
        lines.append(f"  - {path}: {msg}{got}. Fix: {_fix_for(err, loc)}.")
    return "\n".join(lines)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the RunSpec (the CRD's spec schema is derived from it)."""
    return RunSpec.model_json_schema()
