"""The smooth stage's units (between predict and mosaic): each predicted chunk of two tiles
smoothed with its halo read across the tile seam, written into the tiles' smoothed stores,
equals one pass over the whole mosaic, bit for bit; a unit's digest covers the chunks it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from pipeline.model import GridSpec, Window
from pipeline.postprocess.blocks import Placed, mosaic_reader
from pipeline.postprocess.smooth import (
    SmoothingConfig,
    labels_and_confidence,
    percent_to_probability,
    smooth,
)
from pipeline.postprocess.uncertainty import to_percent
from pipeline.predict.blockwise import MapEncoding, create_map_store
from pipeline.run.units import Unit, content_hash
from pipeline.stages.smooth import Placement, SmoothContext, smooth_unit, smooth_units

CODES = (1, 2, 5)
CHUNK = 16
HEIGHT, WIDTH = 37, 50
SPLIT = (30, 25, 27)  # tile A: cols 0..29, tile B: 25..49; A owns cols < 27, B the rest


def _grid(col: int, width: int) -> GridSpec:
    return GridSpec("EPSG:32631", (10.0, 0.0, 500_000.0 + 10 * col, 0.0, -10.0, 5e6), width, HEIGHT)


def _stores(folder: Path) -> tuple[list[Placement], np.ndarray, MapEncoding]:
    rng = np.random.default_rng(3)
    raw = rng.gamma(0.6, size=(len(CODES), HEIGHT, WIDTH)) + rng.gamma(4, size=(1, HEIGHT, 1))
    percent = np.round(raw / raw.sum(axis=0) * 100).astype(np.uint8)
    percent[:, 5:9, 40:44] = 255  # unmapped pixels
    percent[:, 20:23, 24:30] = 255  # across the seam
    encoding = MapEncoding.for_classes(CODES, probabilities=True)
    width_a, start_b, owned = SPLIT
    places = []
    for name, col, width, own in (
        ("a", 0, width_a, (0, owned)),
        ("b", start_b, WIDTH - start_b, (owned, WIDTH)),
    ):
        grid = _grid(col, width)
        paths = [str(folder / f"{name}.zarr"), str(folder / f"{name}_smoothed.zarr")]
        for path in paths:
            create_map_store(path, grid, CHUNK, encoding)
        part = np.full((len(CODES), HEIGHT, width), 255, np.uint8)
        part[:, :, own[0] - col : own[1] - col] = percent[:, :, own[0] : own[1]]
        p = percent_to_probability(part)
        labels, confidence = labels_and_confidence(p, CODES, encoding.nodata, encoding.dtype)
        group = zarr.open_group(paths[0], mode="r+")
        group["label"][:] = labels
        group["confidence"][:] = confidence
        for code, layer in zip(CODES, part, strict=True):
            group[f"probability_{code}"][:] = layer
        places.append(Placement(paths[0], paths[1], (HEIGHT, width), (0, col)))
    return places, percent, encoding


def _chunks(place: Placement) -> list[Window]:
    return GridSpec("EPSG:32631", (1, 0, 0, 0, -1, 0), place.shape[1], place.shape[0]).chunks(CHUNK)


def test_tiles_smoothed_chunk_by_chunk_equal_the_whole_mosaic(tmp_path: Path) -> None:
    places, percent, encoding = _stores(tmp_path)
    config = SmoothingConfig(window_size=5, neigh_fraction=0.5, smoothness=(10.0,))
    context = SmoothContext(
        tuple(places), (HEIGHT, WIDTH), CODES, int(encoding.nodata), encoding.dtype, config
    )
    for index, place in enumerate(places):
        for window in _chunks(place):
            smooth_unit(context, (index, window))
    expected_p = smooth(percent_to_probability(percent), config)
    labels, confidence = labels_and_confidence(expected_p, CODES, encoding.nodata, encoding.dtype)

    def mosaicked(variable: str, fill: int, dtype: str) -> np.ndarray:
        tiles = [
            Placed(zarr.open_group(p.smoothed_url, mode="r")[variable], *p.offset)  # type: ignore[misc]
            for p in places
        ]
        return mosaic_reader(tiles, fill, dtype)(Window(0, 0, HEIGHT, WIDTH))

    assert (mosaicked("label", encoding.nodata, encoding.dtype) == labels).all()
    assert (mosaicked("confidence", 255, "uint8") == confidence).all()
    for code, layer in zip(CODES, expected_p, strict=True):
        assert (mosaicked(f"probability_{code}", 255, "uint8") == to_percent(layer)).all()
    # every pixel with probabilities is mapped, whichever tile owns it
    assert (labels != 0).sum() == (percent != 255).all(axis=0).sum()


def test_a_unit_depends_on_the_chunks_its_halo_reads_in_both_tiles(tmp_path: Path) -> None:
    places, _, _ = _stores(tmp_path)
    predicted = [
        Unit("predict", f"{i}-{w.row_off}-{w.col_off}", content_hash(i, w), (i, w))
        for i, place in enumerate(places)
        for w in _chunks(place)
    ]
    config = SmoothingConfig(window_size=5)
    units = smooth_units(["a", "b"], places, (HEIGHT, WIDTH), predicted, CHUNK, config)
    assert [u.payload for u in units] == [u.payload for u in predicted]
    changed = [
        Unit(u.stage, u.key, content_hash("new") if u.key == "1-0-0" else u.digest, u.payload)
        for u in predicted
    ]
    again = smooth_units(["a", "b"], places, (HEIGHT, WIDTH), changed, CHUNK, config)
    moved = {u.payload for u, v in zip(units, again, strict=True) if u.digest != v.digest}
    # tile B's first chunk (mosaic cols 25..40) is read by A's chunks at cols 16..29 (halo 2)
    # and by B's own neighbours; A's first column of chunks (cols 0..15) does not reach it
    assert (1, Window(0, 0, 16, 16)) in moved
    assert (0, Window(0, 16, 16, 14)) in moved
    assert (0, Window(0, 0, 16, 16)) not in moved
    assert (1, Window(32, 16, 5, 9)) not in moved
