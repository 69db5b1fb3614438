"""The JSON Schema of RunSpec (the CRD's spec schema is derived from it)."""

from __future__ import annotations

from typing import Any

from pipeline.manifest.run import RunSpec


def json_schema() -> dict[str, Any]:
    """JSON Schema of the RunSpec (the CRD's spec schema is derived from it)."""
    return RunSpec.model_json_schema()
