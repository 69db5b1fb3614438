"""The postprocess section: checked with errors that name the key, resolved into its config."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from pipeline.errors import ManifestError
from pipeline.manifest import parse_manifest, resolve
from pipeline.postprocess.config import PostprocessConfig
from tests.conftest import DEMO_DIR, DEMO_MANIFEST

DEMO = yaml.safe_load(DEMO_MANIFEST.read_text())


def _parse(postprocess: Any, **outputs: Any) -> Any:
    data = copy.deepcopy(DEMO)
    data["spec"]["postprocess"] = postprocess
    data["spec"]["outputs"].update(outputs)
    return parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR)


def test_the_demo_makes_the_regularized_map_and_the_polygons() -> None:
    config = resolve(parse_manifest(DEMO_MANIFEST.read_text(), base_dir=DEMO_DIR)).postprocess
    assert isinstance(config, PostprocessConfig)
    assert config.regularization is not None and config.regularization.mmu_hectares == 0.05
    # 0.05 ha on the demo's 10 m grid: 5 pixels
    assert config.regularization.on_grid((10.0, 10.0)).mmu == 5
    assert config.vectorization is not None and config.vectorization.formats == ("parquet", "gpkg")
    assert config.smoothing is None and config.uncertainty is None


def test_every_part_resolves_with_its_defaults() -> None:
    manifest = _parse(
        {
            "smoothing": {},
            "regularization": {"mmu_pixels": 9, "connectivity": 8},
            "vectorization": {"simplify": 12.5},
            "uncertainty": {"layers": ["margin"]},
            "colors": {2: "#00ff00"},
        },
        probabilities=True,
    )
    config = resolve(manifest).postprocess
    assert config is not None and config.smoothing is not None
    assert (config.smoothing.window_size, config.smoothing.smoothness) == (7, (10.0,))
    assert config.regularization is not None
    assert config.regularization.on_grid((10.0, 10.0)).halo == 2 * (2 * 9 - 2)
    assert config.connectivity == 8  # the polygons follow the regularization
    assert config.vectorization is not None and config.vectorization.simplify == 12.5
    assert config.uncertainty is not None and config.uncertainty.layers == ("margin",)
    assert config.colors == ((2, "#00ff00"),)


@pytest.mark.parametrize(
    ("postprocess", "outputs", "words"),
    [
        ({"regularization": {}}, {}, ["postprocess.regularization", "mmu_hectares"]),
        (
            {"regularization": {"mmu_pixels": 4, "mmu_hectares": 1}},
            {},
            ["both of mmu_pixels and mmu_hectares"],
        ),
        ({"regularization": {"mmu_pixels": 0}}, {}, ["postprocess.regularization.mmu_pixels"]),
        (
            {"regularization": {"mmu_pixels": 4, "connectivity": 6}},
            {},
            ["postprocess.regularization.connectivity"],
        ),
        ({"smoothing": {"window_size": 6}}, {"probabilities": True}, ["window_size", "odd"]),
        (
            {"smoothing": {"smoothness": [10, -1]}},
            {"probabilities": True},
            ["smoothness", "above 0"],
        ),
        ({"smoothing": {}}, {}, ["postprocess.smoothing", "outputs.probabilities: true"]),
        ({"uncertainty": {}}, {}, ["postprocess.uncertainty", "outputs.probabilities"]),
        ({"vectorization": {"formats": ["shp"]}}, {}, ["postprocess.vectorization.formats"]),
        ({"vectorization": {"formats": ["gpkg", "gpkg"]}}, {}, ["repeats a format"]),
        ({"vectorization": {"simplify": 0}}, {}, ["postprocess.vectorization.simplify"]),
        ({"colors": {1: "green"}}, {}, ["postprocess.colors", "#rrggbb"]),
        ({"sieve": {}}, {}, ["postprocess.sieve"]),
    ],
)
def test_a_wrong_section_is_refused_with_its_key(
    postprocess: dict[str, Any], outputs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ManifestError) as caught:
        _parse(postprocess, **outputs)
    message = str(caught.value)
    for word in words:
        assert word in message, message


def test_a_regression_run_has_no_label_map_to_postprocess() -> None:
    data = copy.deepcopy(DEMO)
    data["spec"]["task"] = "regression"
    data["spec"]["reference"] = {"path": "reference/lulc.gpkg", "value_field": "height"}
    with pytest.raises(ManifestError, match="task 'regression' makes none"):
        parse_manifest(yaml.safe_dump(data), base_dir=DEMO_DIR)
