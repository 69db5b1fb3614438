"""The ``features.encoders`` manifest entry: it loads (weights relative to the manifest), is
refused with the field and a fix when malformed, and refused with the readers of (dates,
channels) series (torch models, objects, fusion)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pipeline.cube.encoders import EncoderConfig
from pipeline.errors import ManifestError
from pipeline.manifest import RunManifest, parse_manifest, resolve
from pipeline.run.units import canonical
from pipeline.stages.cube import check_encoder_readers
from tests.conftest import DEMO_DIR, DEMO_MANIFEST

ENCODER = {"name": "tiny", "module": "my_pkg.encoders:build", "weights": "models/tiny.pt",
           "inputs": ["s2_ndvi"], "dates": 37, "width": 8}  # fmt: skip


def parse(encoders: list[dict[str, Any]], model: dict[str, Any] | None = None) -> RunManifest:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data["spec"]["features"] = {"encoders": encoders}
    if model is not None:
        data["spec"]["model"] = model
    return parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR, source="test.yaml")


def test_an_encoder_loads_with_its_weights_resolved_beside_the_manifest() -> None:
    config = resolve(parse([ENCODER]))
    (encoder,) = config.features.encoders
    assert encoder == EncoderConfig(
        "tiny", "my_pkg.encoders:build", str(DEMO_DIR / "models" / "tiny.pt"), ("s2_ndvi",), 37, 8
    )
    check_encoder_readers(config)  # a random forest reads static features
    assert "encoders" in canonical(config.features)
    assert "encoders" not in canonical(resolve(parse([])).features)  # digests as they were


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"module": "my_pkg.encoders"}, "spec.features.encoders[0].module", "pattern"),
        ({"name": "Tiny"}, "spec.features.encoders[0].name", "pattern"),
        ({"inputs": []}, "spec.features.encoders[0].inputs", "at least 1"),
        ({"inputs": ["s2_ndvi", "s2_ndvi"]}, "spec.features.encoders[0]", "an input twice"),
        ({"width": 0}, "spec.features.encoders[0].width", "greater than or equal to 1"),
    ],
)
def test_malformed_encoders_are_refused_with_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse([{**ENCODER, **change}])
    message = str(caught.value)
    assert f"  - {field}" in message and words in message, message


def test_two_encoders_of_one_name_are_refused() -> None:
    with pytest.raises(ManifestError, match="use a name twice"):
        parse([ENCODER, ENCODER])


def test_patch_models_are_refused_with_encoders_and_pixel_torch_models_take_them() -> None:
    check_encoder_readers(
        resolve(parse([ENCODER], model={"kind": "torch", "architecture": "tempcnn"}))
    )
    config = resolve(parse([ENCODER], model={"kind": "torch_patch", "architecture": "utae"}))
    with pytest.raises(ManifestError) as caught:
        check_encoder_readers(config)
    assert caught.value.field == "model.kind" and "static features" in str(caught.value)
    assert "kind sklearn or torch" in (caught.value.fix or "")
