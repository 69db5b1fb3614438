"""What every manifest section shares: the strict base model, patterns and small checks."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
)

API_VERSION: Literal["sitsflow.dev/v1alpha1"] = "sitsflow.dev/v1alpha1"
KIND: Literal["SitsRun"] = "SitsRun"

_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_IDENT = r"^[a-z][a-z0-9_]*$"
_IMPORT_PATH = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*)?$"
_MEMORY = r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


_MGRS_TILE = r"^(0?[1-9]|[1-5][0-9]|60)[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]$"
_ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"
_HEADER = r"^[A-Za-z0-9-]+$"


def _lon_lat_ok(lon: float, lat: float) -> bool:
    return -180 <= lon <= 180 and -90 <= lat <= 90


def _at(field: str, problem: str, fix: str) -> ValueError:
    """A validator error that names the exact key: rendered as ``<section>.<field>: ...``."""
    return ValueError(f"[{field}] {problem}; {fix}")


def _is_url(value: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value))
