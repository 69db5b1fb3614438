"""The outputs section: the run store and the paths of the maps and report inside it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.manifest.common import (
    _at,
    _is_url,
    _Strict,
)

_STORE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "file")
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def _check_store(store: str) -> str:
    if "\x00" in store:
        raise ValueError("the store contains a NUL character; give a plain folder or URL")
    if not _is_url(store):
        return store
    scheme, _, rest = store.partition("://")
    scheme = scheme.lower()
    bucket = rest.split("/", 1)[0]
    # Credentials and signed queries first, and never echoed: the message is printed and logged.
    if "@" in bucket:
        raise ValueError(
            "the store URL holds credentials (user:secret@); remove them, credentials come from "
            "the environment, fsspec/boto configuration or a Kubernetes secret, never the manifest"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"the store URL {scheme}://{bucket}/... has a query or fragment; give a plain "
            "location such as s3://bucket/runs/name (options and credentials come from the "
            "environment)"
        )
    if scheme in ("http", "https"):
        raise ValueError(
            f"store {store!r} is an HTTP URL, which cannot be written; use a local folder or an "
            "object storage URL such as s3://bucket/runs/name"
        )
    if scheme not in _STORE_SCHEMES:
        raise ValueError(
            f"store {store!r} uses the unsupported scheme {scheme!r}; use a local folder or "
            f"one of {', '.join(s + '://' for s in _STORE_SCHEMES)}"
        )
    if scheme == "file":
        if not rest.startswith("/"):
            raise ValueError(
                f"store {store!r} is not an absolute file:// URL; write file:///absolute/path or "
                "a plain (relative) path"
            )
        return rest
    if scheme == "s3" and not re.match(_BUCKET, bucket):
        raise ValueError(
            f"store {store!r} has no valid bucket name ({bucket!r}: 3-63 lowercase letters, "
            "digits, '.' and '-'); write it as s3://bucket/prefix"
        )
    if not bucket:
        raise ValueError(f"store {store!r} has no bucket; write it as {scheme}://bucket/prefix")
    return f"{scheme}://{rest.rstrip('/')}"


def _check_member(name: str, value: str, suffixes: tuple[str, ...] = ()) -> str:
    """A path inside the run store: relative, posix, never climbing out of the store."""
    from pipeline.run.layout import RESERVED, RESERVED_PATHS, reserved_by

    text = value.strip()
    if _is_url(text) or text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        raise ValueError(
            f"{name} {value!r} is not a path inside the run store; give a relative path such as "
            f"{'maps/' + name + '.tif' if suffixes else name} (it is placed under outputs.store)"
        )
    if "\\" in text:
        raise ValueError(f"{name} {value!r} uses backslashes; write it with '/' separators")
    parts = text.split("/")
    if ".." in parts:
        raise ValueError(
            f"{name} {value!r} climbs out of the run store with '..'; keep it inside the store "
            f"(e.g. {'maps/' + name + '.tif' if suffixes else name})"
        )
    if any(p in ("", ".") for p in parts):
        raise ValueError(
            f"{name} {value!r} has an empty or '.' path segment; write it like maps/{name}.tif"
        )
    taken = reserved_by(text)
    if taken is not None:
        raise ValueError(
            f"{name} {value!r} lies in {taken!r}, which the run keeps for itself; choose "
            f"another path (reserved: {', '.join([*sorted(RESERVED), *RESERVED_PATHS])})"
        )
    if suffixes and not text.lower().endswith(suffixes):
        raise ValueError(
            f"{name} {value!r} must end with {' or '.join(suffixes)} (a Cloud-Optimized "
            f"GeoTIFF); rename it, e.g. {text.rsplit('.', 1)[0]}.tif"
        )
    return text


class OutputsSpec(_Strict):
    """Where the run writes: the run store, a local folder or an object-storage prefix.

    The store holds the cube, samples, model, maps, report and the run's state (its ledger).
    """

    store: str = Field(
        description="Run store: a local folder (relative paths are relative to the manifest) or "
        "an object storage URL such as s3://bucket/runs/name. Credentials come from the "
        "environment, never from here.",
        min_length=1,
    )
    labels: str = Field(
        "maps/labels.tif",
        description="Path of the label map (COG) inside the run store.",
        min_length=1,
    )
    confidence: str = Field(
        "maps/confidence.tif",
        description="Path of the confidence map (COG) inside the run store.",
        min_length=1,
    )
    probabilities: bool = Field(
        False,
        description="Also write, beside the label map, one COG per class of the training data "
        "with the model's probability of that class (percent; probability_<code>.tif).",
    )
    values: str = Field(
        "maps/values.tif",
        description="Path of the predicted value map (COG, task regression) inside the run store.",
        min_length=1,
    )
    report: str = Field(
        "report",
        description="Folder of the accuracy report inside the run store.",
        min_length=1,
    )
    cube_encoding: Literal["int16", "float32"] = Field(
        "int16",
        description="How the cube stores its time series. int16: scaled integers, reflectance "
        "bands, NDVI and NDWI in steps of 1e-4, bands in dB in steps of 0.01 (brightness in the "
        "step of its bands), -32768 for no value; other bands and user features stay float32. "
        "Half the bytes of float32 to write and store; 1e-4 reflectance is below the sensors' "
        "radiometric precision. Samples, maps and the streamed path all see the stored values. "
        "float32: every time series as float32.",
    )
    keep_cube: bool = Field(
        True,
        description="Write the feature cube (cube.zarr). false: no cube is written; each "
        "prediction unit computes its chunk's features (plus the model's halo) from the imagery "
        "and predicts them in the same task, and the samples are read straight from the imagery. "
        "The maps and the samples table are the same to the bit (the features are quantized as "
        "cube_encoding says, exactly as a stored cube would hand them to the model). Not with "
        "objects, fusion or patch models (model.kind torch_patch), which read the cube.",
    )

    license: str | None = Field(
        None,
        description="Licence of the maps in the run's STAC collection: an SPDX identifier such "
        "as CC-BY-4.0, or 'other' / 'proprietary'. Default: the licence of the input "
        "collections (static catalogs) when they all agree, else 'other'.",
        min_length=1,
    )
    license_url: str | None = Field(
        None,
        description="URL of the licence text, linked from the STAC collection (rel license). "
        "Default: the input collections' licence link when the licence is theirs.",
        min_length=1,
    )

    @field_validator("store")
    @classmethod
    def _store_location(cls, store: str) -> str:
        return _check_store(store)

    @field_validator("labels", "confidence")
    @classmethod
    def _map_paths(cls, value: str, info: ValidationInfo) -> str:
        return _check_member(str(info.field_name), value, (".tif", ".tiff"))

    @field_validator("report")
    @classmethod
    def _report_path(cls, value: str) -> str:
        return _check_member("report", value)

    @model_validator(mode="after")
    def _distinct(self) -> OutputsSpec:
        named = {"labels": self.labels, "confidence": self.confidence, "report": self.report}
        order = list(named)
        for a, path_a in named.items():
            for b, path_b in named.items():
                if order.index(a) < order.index(b) and path_a == path_b:
                    raise _at(b, f"{a} and {b} are both {path_a!r}", f"give {b} its own path")
                if a != b and path_b.startswith(path_a.rstrip("/") + "/"):
                    raise _at(
                        b,
                        f"{b} {path_b!r} lies inside {a} {path_a!r}",
                        f"put {b} beside {a}, not inside it",
                    )
        return self
