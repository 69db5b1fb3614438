"""Legends in map files (colour table, category names GDAL reads, descriptions and units) and
the uncertainty layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from pipeline.model import ClassInfo
from pipeline.postprocess.legend import (
    BandInfo,
    apply_band_info,
    band_infos,
    default_colors,
    group_of,
    legend,
    read_category_names,
    write_category_names,
)
from pipeline.postprocess.uncertainty import entropy, margin, to_percent


def _hue(color: str) -> float:
    import colorsys

    r, g, b = (int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def test_related_land_covers_get_related_colours() -> None:
    classes = [
        (1, "Broadleaf forest"),
        (2, "Coniferous forest"),
        (3, "Water"),
        (4, "Urban fabric"),
        (5, "Annual crops"),
        (6, "Grassland"),
        (7, "Weird class"),
        (8, "Cultivated land"),
    ]
    colors = default_colors(classes)
    assert colors[1] != colors[2]
    assert 90 < _hue(colors[1]) < 150 and 90 < _hue(colors[2]) < 150  # greens
    assert 200 < _hue(colors[3]) < 240  # blue
    assert _hue(colors[4]) < 15 or _hue(colors[4]) > 345  # red
    assert 35 < _hue(colors[5]) < 55 and 35 < _hue(colors[8]) < 55  # yellows
    assert 80 < _hue(colors[6]) < 120  # light green
    assert colors == default_colors(list(reversed(classes)))  # deterministic
    assert group_of("Tree cover") == group_of("forest") and group_of("xyz") is None
    assert group_of("Seasonal crops") == group_of("wheat") != group_of("sea")
    entries = legend([(1, "forest", "#ff0000"), (2, "water", None)])
    assert entries[0].color == "#ff0000" and entries[1].color == colors[3]


def test_a_label_cog_carries_its_legend(tmp_path: Path) -> None:
    entries = legend([(1, "forest", None), (3, "water", None), (4, "crops", "#e0c000")])
    staging, cog = tmp_path / "labels.gtiff", tmp_path / "labels.tif"
    profile = {
        "driver": "GTiff",
        "width": 8,
        "height": 8,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": rasterio.Affine(10, 0, 0, 0, -10, 80),
        "nodata": 0,
    }
    with rasterio.open(staging, "w", **profile) as dst:
        dst.write(np.tile(np.array([1, 3, 4, 0], dtype=np.uint8), (8, 2))[None])
        apply_band_info(dst, band_infos(entries)["labels"])
    rasterio.shutil.copy(staging, cog, driver="COG", overview_resampling="nearest")
    write_category_names(cog, entries)
    with rasterio.open(cog) as src:
        cmap = src.colormap(1)
        assert cmap[4] == (0xE0, 0xC0, 0x00, 255) and cmap[1][:3] != cmap[3][:3]
        assert src.descriptions[0].startswith("land cover class")
    assert read_category_names(cog) == ["", "forest", "", "water", "crops"]
    # rewriting keeps one set of names
    write_category_names(cog, entries[:1])
    assert read_category_names(cog) == ["", "forest"]


def test_confidence_layers_carry_description_and_unit(tmp_path: Path) -> None:
    path = tmp_path / "entropy.tif"
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 2, 2), dtype=np.uint8))
        apply_band_info(dst, BandInfo("normalized entropy", "%"))
    with rasterio.open(path) as src:
        assert src.descriptions == ("normalized entropy",) and src.units == ("%",)


def test_entropy_and_margin() -> None:
    p = np.array([[[1.0, 0.5, 0.6, np.nan]], [[0.0, 0.5, 0.3, 0.5]], [[0.0, 0.0, 0.1, 0.5]]])
    h = entropy(p)
    assert h[0, 0] == 0.0 and h[0, 1] == pytest.approx(np.log(2) / np.log(3))
    assert np.isnan(h[0, 3])
    m = margin(p)
    assert m[0, 0] == 0.0 and m[0, 1] == 1.0 and m[0, 2] == pytest.approx(0.7)
    assert np.isnan(m[0, 3])
    uniform = np.full((4, 1, 1), 0.25)
    assert entropy(uniform)[0, 0] == pytest.approx(1.0) and margin(uniform)[0, 0] == 1.0
    np.testing.assert_array_equal(to_percent(m), [[0, 100, 70, 255]])
    # smoothed probabilities that do not sum to 1 are renormalized first
    np.testing.assert_allclose(entropy(p[:, :, :3] * 0.5), h[:, :3])


def test_class_info_is_the_model_class() -> None:
    assert isinstance(legend([(1, "a", None)])[0], ClassInfo)
