"""Manifest sections as the edge resolves them, for tests that call library code directly.

Each helper validates its values with the manifest's pydantic section (defaults, normalization,
rules) and returns the domain config the library takes, as ``pipeline.manifest.resolve`` would.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline import manifest
from pipeline.catalog.config import CatalogConfig
from pipeline.grid import AreaConfig
from pipeline.manifest import to_config
from pipeline.samples.config import ReferenceConfig, RegionsConfig, SamplingConfig


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Nested configs back to mappings, for the pydantic section to check."""
    return {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        for k, v in values.items()
    }


def catalog(**values: Any) -> CatalogConfig:
    return to_config.catalog_config(manifest.CatalogSpec(**values))


def area(**values: Any) -> AreaConfig:
    return to_config.area_config(manifest.AreaSpec(**values))


def regions(**values: Any) -> RegionsConfig:
    return to_config.regions_config(manifest.RegionsSpec(**values))


def reference(**values: Any) -> ReferenceConfig:
    return to_config.reference_config(manifest.ReferenceSpec(**_plain(values)))


def sampling(**values: Any) -> SamplingConfig:
    return to_config.sampling_config(manifest.SamplingSpec(**values))
