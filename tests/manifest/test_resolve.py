"""resolve() turns the demo manifest into configs equal, attribute by attribute, to its sections,
with the same unit digests."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.manifest import RunManifest, load_manifest, resolve
from pipeline.run.config import RunConfig
from pipeline.run.units import canonical

DEMO = Path(__file__).resolve().parents[2] / "examples" / "slovenia" / "run.yaml"


def _same(section: Any, config: Any, where: str) -> None:
    """Every field of the pydantic ``section`` equals the config's attribute of that name."""
    if isinstance(section, BaseModel):
        assert dataclasses.is_dataclass(config), f"{where}: {config!r} is not a config"
        names = {f.name for f in dataclasses.fields(config)}
        assert set(type(section).model_fields) <= names, f"{where}: fields missing"
        for name in type(section).model_fields:
            _same(getattr(section, name), getattr(config, name), f"{where}.{name}")
    elif isinstance(section, list | tuple):
        assert isinstance(config, tuple), f"{where}: a list becomes a tuple"
        assert len(section) == len(config), where
        for i, (a, b) in enumerate(zip(section, config, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif isinstance(section, Mapping) and isinstance(config, tuple):
        # a frozen config keeps a small mapping as its (key, value) pairs, in order
        assert list(section.items()) == list(config), where
    elif isinstance(section, Mapping):
        assert isinstance(config, Mapping) and list(section) == list(config), where
        for key in section:
            _same(section[key], config[key], f"{where}[{key!r}]")
    else:
        assert section == config and type(section) is type(config), where


# Fields added to a section after run stores existed enter its digest only when set (the
# config's __canonical__ leaves them out when unset, i.e. at their default: field -> default),
# so stores made before keep every digest.
_ADDED_LATER: dict[str, dict[str, Any]] = {
    "model": {"patch": None, "inference": "auto"},
    "outputs": {"license": None, "license_url": None, "keep_cube": True},
    "features": {"encoders": []},
}


# Sections born with their configs have no older digests to keep.
_NEW_SECTIONS = {"postprocess", "fusion", "objects"}


def _digest_form(name: str, section: Any) -> Any:
    form = canonical(section)
    for field, default in _ADDED_LATER.get(name, {}).items():
        if isinstance(form, dict) and form.get(field, default) == default:
            form.pop(field, None)
    return form


def _demo() -> tuple[RunManifest, RunConfig]:
    manifest = load_manifest(DEMO)
    return manifest, resolve(manifest)


def test_resolve_gives_every_section_as_a_config() -> None:
    manifest, config = _demo()
    assert config.name == manifest.name
    spec = manifest.spec
    for name in type(spec).model_fields:
        _same(getattr(spec, name), getattr(config, name), name)
    assert config.document == manifest.model_dump(mode="json")
    assert config.period.label == spec.period.label


def test_configs_keep_the_digests_of_the_sections() -> None:
    manifest, config = _demo()
    for name in type(manifest.spec).model_fields:
        section = getattr(manifest.spec, name)
        if name not in _NEW_SECTIONS:
            assert canonical(getattr(config, name)) == _digest_form(name, section), name


def test_configs_are_frozen_hashable_and_travel() -> None:
    _, config = _demo()
    assert pickle.loads(pickle.dumps(config)) == config
    for name in ("period", "area", "reference", "sampling", "model", "outputs", "compute"):
        hash(getattr(config, name))
    hash(config.sensors)
    try:
        config.sampling.seed = 1  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a config can be changed")


def test_a_richer_manifest_resolves_too(tmp_path: Path) -> None:
    """Nested sections the demo leaves out: regions, grid search, adaptive, kubernetes."""
    text = DEMO.read_text()
    manifest = load_manifest(DEMO)
    data = manifest.model_dump(mode="json", exclude_unset=True)
    data["spec"]["reference"]["regions"] = {"path": "regions.gpkg", "field": "zone"}
    data["spec"]["model"] = {"grid_search": {"param_grid": {"n_estimators": [10, 20]}}}
    data["spec"]["compute"] = {
        "cluster": "kubernetes",
        "workers": 2,
        "adaptive": {"maximum": 4},
        "kubernetes": {"image": "ghcr.io/org/sitsflow:0.1.0"},
    }
    data["spec"]["also_map"] = [{"start": "2018-01-01", "end": "2018-12-31"}]
    rich = RunManifest.model_validate(data)
    config = resolve(rich)
    for name in type(rich.spec).model_fields:
        _same(getattr(rich.spec, name), getattr(config, name), name)
        if name not in _NEW_SECTIONS:
            form = _digest_form(name, getattr(rich.spec, name))
            assert canonical(getattr(config, name)) == form, name
    assert config.periods[1].label == "2018" and text
