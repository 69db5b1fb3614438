"""The features section: spectral indices, user feature functions and encoders."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from pipeline.manifest.common import (
    _IDENT,
    _Strict,
)

_FACTORY = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$"


class EncoderSpec(_Strict):
    """A pretrained encoder run per chunk on the gap-filled series (one vector per pixel).

    Its output is stored in the cube as static variables ``<name>_e00``, ``<name>_e01``...:
    features like any band, for sklearn and external models."""

    name: str = Field(
        pattern=_IDENT,
        description="Its id (lowercase): the prefix of its cube variables and feature names.",
    )
    module: str = Field(
        pattern=_FACTORY,
        description="Import path 'package.module:factory' of a function (or class) that builds "
        "the encoder's torch nn.Module with no arguments; its forward takes a float32 tensor "
        "(pixels, dates, inputs) and returns (pixels, width).",
    )
    weights: str = Field(
        description="The module's state dict (torch.save(module.state_dict(), path)): a local "
        "path (relative to the manifest) or a URL (s3://..., https://...). Its content digest "
        "is part of the cube's identity: changed weights rebuild the cube.",
    )
    inputs: list[str] = Field(
        min_length=1,
        description="Cube variables it reads, in its channel order: a sensor's name, '_' and a "
        "band, index or user feature (e.g. s2_red, s2_nir, s2_ndvi).",
    )
    dates: int = Field(
        ge=1,
        description="Dates it expects per input: must be the cube's (spec.period and the "
        "sensor's date_step_days), checked when the run is planned.",
    )
    width: int = Field(ge=1, le=4096, description="Length of its output vector per pixel.")
    batch_size: int = Field(
        4096, ge=1, description="Pixels per forward pass (torch.inference_mode, CPU)."
    )

    @model_validator(mode="after")
    def _distinct_inputs(self) -> EncoderSpec:
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(
                f"encoder {self.name!r} lists an input twice in {self.inputs}; list each once"
            )
        return self


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

    encoders: list[EncoderSpec] = Field(
        default_factory=list,
        description="Pretrained encoders whose per-pixel output vectors become features "
        "(static cube variables <name>_e00...). Models: sklearn, external and torch (pixel "
        "models: static channels, the same value on every date); torch_patch is refused.",
    )

    @field_validator("encoders")
    @classmethod
    def _encoder_names(cls, encoders: list[EncoderSpec]) -> list[EncoderSpec]:
        names = [e.name for e in encoders]
        if len(set(names)) != len(names):
            raise ValueError(f"encoders {names} use a name twice; give each encoder its own name")
        return encoders

    def with_paths(self, resolve: Callable[[str], str]) -> FeaturesSpec:
        """The section with each encoder's weights location resolved."""
        encoders = [e.model_copy(update={"weights": resolve(e.weights)}) for e in self.encoders]
        return self.model_copy(update={"encoders": encoders})
