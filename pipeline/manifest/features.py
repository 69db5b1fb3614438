"""The features section: spectral indices and user feature functions."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from pipeline.manifest.common import (
    _Strict,
)


class FeaturesSpec(_Strict):
    """Features computed from the gap-filled bands (the bands themselves are always features)."""

    indices: list[Literal["ndvi", "ndwi", "brightness"]] | None = Field(
        None,
        description="Spectral indices to add; ndvi needs bands red and nir, ndwi green and nir, "
        "brightness two bands or more. Default: each of ndvi, ndwi and brightness that a "
        "sensor's bands allow; [] for none.",
    )
    user_functions: list[str] = Field(
        default_factory=list,
        description="Feature functions by import path 'module:function': each gets a sensor's "
        "gap-filled bands by name ((dates, y, x) float32 arrays) and returns a dict of new "
        "features of the same shape, named with lowercase ids.",
    )

    @field_validator("user_functions")
    @classmethod
    def _function_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$", path.strip()):
                raise ValueError(
                    f"user function {path!r} is not an import path; write it as "
                    "'package.module:function'"
                )
        if len(set(paths)) != len(paths):
            raise ValueError(
                f"user_functions {paths} lists a function twice; list each function once"
            )
        return [p.strip() for p in paths]
