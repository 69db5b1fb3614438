"""Regularization to a minimum mapping unit: the written rules on small maps, an independent
reference (scipy's labelling, one region at a time), and chunked or tiled processing equal to
the whole map exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pipeline.errors import ManifestError
from pipeline.model import GridSpec, Window
from pipeline.postprocess.blocks import Placed, array_reader, cached_reader, mosaic_reader
from pipeline.postprocess.regularize import (
    RegularizationConfig,
    mmu_pixels,
    regularize,
    regularize_window,
)

CODES = np.array([1, 2, 3, 4])


def _structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)


def _reference(labels: np.ndarray, mmu: int, connectivity: int) -> np.ndarray:
    """The rules of the module's docstring, region by region with scipy (no majority filter)."""
    structure = _structure(connectivity)
    regions = np.zeros(labels.shape, dtype=int)
    n = 0
    for code in CODES:
        lab, k = ndimage.label(labels == code, structure=structure)
        regions[lab > 0] = lab[lab > 0] + n
        n += k
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    out = labels.copy()
    for region in range(1, n + 1):
        if sizes[region] >= mmu:
            continue
        mask = regions == region
        ring = ndimage.binary_dilation(mask, structure=structure) & ~mask & (regions > 0)
        large = ring & (sizes[regions] >= mmu)
        chosen = large if large.any() else ring
        if not chosen.any():
            continue
        counts = [(int((labels[chosen] == c).sum()), -int(c)) for c in CODES]
        out[mask] = -max(counts)[1]
    return out


def _random_map(seed: int, rows: int, cols: int, holes: float, blobs: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if blobs:  # patches of a few pixels, like a classified map
        small = rng.integers(1, 5, (rows // 3 + 1, cols // 3 + 1))
        labels = np.kron(small, np.ones((3, 3), dtype=int))[:rows, :cols]
        noise = rng.random((rows, cols)) < 0.25
        labels[noise] = rng.integers(1, 5, int(noise.sum()))
    else:
        labels = rng.integers(1, 5, (rows, cols))
    labels = labels.astype(np.uint8)
    labels[rng.random((rows, cols)) < holes] = 0
    return labels


def test_an_island_takes_the_class_around_it_and_no_data_stays() -> None:
    labels = np.full((7, 7), 1, dtype=np.uint8)
    labels[3, 3] = 2
    labels[0, 0] = 0
    out = regularize(labels, RegularizationConfig(mmu=2, passes=1), 0, CODES)
    assert out[3, 3] == 1 and out[0, 0] == 0 and (out[1:, 1:] == 1).all()


def test_the_majority_of_large_neighbours_decides_and_ties_go_to_the_lowest_code() -> None:
    # a 2-pixel region of 3 between a large region of 2 (left) and one of 1 (right):
    # each side gives 4 surrounding pixels (8-connectivity, rows 1-2 of a 4-row strip)
    labels = np.array(
        [
            [2, 2, 2, 1, 1, 1],
            [2, 2, 3, 1, 1, 1],
            [2, 2, 3, 1, 1, 1],
            [2, 2, 2, 1, 1, 1],
        ],
        dtype=np.uint8,
    )
    out = regularize(labels, RegularizationConfig(mmu=3, connectivity=4, passes=1), 0, CODES)
    # 4-neighbours of the pair: 2 above and below, 2 on the left, 1 twice on the right: 2 wins
    assert (out[1:3, 2] == 2).all()
    labels[0, 2] = labels[3, 2] = 1  # now 2 x 2 and 4 x 1 ... and 1 region of 1 is large
    out = regularize(labels, RegularizationConfig(mmu=3, connectivity=4, passes=1), 0, CODES)
    assert (out[1:3, 2] == 1).all()
    tie = np.array([[1, 1, 1], [1, 3, 2], [2, 2, 2]], dtype=np.uint8)
    tie[0, 2] = 2  # 3's 4-neighbours: 1 (up, left), 2 (right, down): a tie -> code 1
    assert (
        regularize(tie, RegularizationConfig(mmu=2, connectivity=4, passes=1), 0, CODES)[1, 1] == 1
    )


def test_small_neighbours_decide_only_when_no_large_one_touches() -> None:
    labels = np.array([[1, 2, 1], [3, 4, 3], [0, 0, 0]], dtype=np.uint8)
    out = regularize(labels, RegularizationConfig(mmu=4, connectivity=4, passes=1), 0, CODES)
    # every region is small: each takes the majority of its own surrounding pixels
    np.testing.assert_array_equal(out, _reference(labels, 4, 4))
    assert out[1, 1] == 3  # 4's neighbours: 2 (up), 3 (left), 3 (right)
    alone = np.array([[0, 0, 0], [0, 2, 0], [0, 0, 0]], dtype=np.uint8)
    assert regularize(alone, RegularizationConfig(mmu=5), 0, CODES)[1, 1] == 2


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 30),
    cols=st.integers(1, 30),
    mmu=st.integers(1, 7),
    connectivity=st.sampled_from([4, 8]),
    holes=st.sampled_from([0.0, 0.1]),
    blobs=st.booleans(),
    passes=st.integers(1, 2),
)
def test_the_kernel_follows_the_written_rules(
    seed: int,
    rows: int,
    cols: int,
    mmu: int,
    connectivity: int,
    holes: float,
    blobs: bool,
    passes: int,
) -> None:
    labels = _random_map(seed, rows, cols, holes, blobs)
    config = RegularizationConfig(mmu, connectivity, passes=passes)  # type: ignore[arg-type]
    expected = labels
    for _ in range(passes):
        expected = _reference(expected, mmu, connectivity)
    np.testing.assert_array_equal(regularize(labels, config, 0, CODES), expected)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    chunk=st.integers(1, 12),
    mmu=st.integers(1, 9),
    connectivity=st.sampled_from([4, 8]),
    radius=st.sampled_from([0, 0, 1, 2]),
    holes=st.sampled_from([0.0, 0.1]),
    blobs=st.booleans(),
    passes=st.integers(1, 3),
    stored=st.sampled_from([0, 7, 16]),
)
def test_chunked_equals_whole(
    seed: int,
    rows: int,
    cols: int,
    chunk: int,
    mmu: int,
    connectivity: int,
    radius: int,
    holes: float,
    blobs: bool,
    passes: int,
    stored: int,
) -> None:
    labels = _random_map(seed, rows, cols, holes, blobs)
    config = RegularizationConfig(mmu, connectivity, radius, passes)  # type: ignore[arg-type]
    whole = regularize(labels, config, 0, CODES)
    grid = GridSpec("EPSG:3857", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), cols, rows)
    # stored: read through a cache of a few decoded storage chunks of that size (0: none)
    read = cached_reader(labels, (stored, stored), 3) if stored else array_reader(labels)
    out = np.full_like(labels, 255)
    for w in grid.chunks(chunk):
        out[w.slices] = regularize_window(read, (rows, cols), w, config, 0, CODES)
    np.testing.assert_array_equal(out, whole)


def test_a_region_across_a_tile_seam_is_regularized_as_in_the_whole_map() -> None:
    labels = _random_map(11, 48, 60, 0.02, True)
    labels[20:23, 28:33] = 4  # a small region cut by the seam at column 30
    config = RegularizationConfig(mmu=12, connectivity=8, majority_radius=1)
    whole = regularize(labels, config, 0, CODES)
    tiles = [Placed(labels[:, :30], 0, 0), Placed(labels[:, 30:], 0, 30)]
    read = mosaic_reader(tiles, 0, np.uint8)
    out = np.empty_like(labels)
    for tile in (Window(0, 0, 48, 30), Window(0, 30, 48, 30)):
        grid = GridSpec("EPSG:3857", (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), tile.width, tile.height)
        for w in grid.chunks(16):
            w = Window(w.row_off, w.col_off + tile.col_off, w.height, w.width)
            out[w.slices] = regularize_window(read, labels.shape, w, config, 0, CODES)
    np.testing.assert_array_equal(out, whole)


def test_units_and_settings() -> None:
    assert mmu_pixels(1.0, (10.0, 10.0)) == 100
    assert mmu_pixels(0.5, (20.0, 20.0)) == 13
    with pytest.raises(ManifestError) as error:
        RegularizationConfig(mmu=0)
    assert error.value.field == "postprocess.regularization.mmu"
    with pytest.raises(ManifestError, match="neither 4 nor 8"):
        RegularizationConfig(mmu=3, connectivity=6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not among the classes"):
        regularize(np.array([[9]], dtype=np.uint8), RegularizationConfig(2), 0, CODES)
    with pytest.raises(ValueError, match="not among the classes"):
        regularize(np.array([[9]], dtype=np.int32), RegularizationConfig(2), 0, CODES)
    with pytest.raises(ManifestError, match="passes"):
        RegularizationConfig(mmu=3, passes=0)
    assert RegularizationConfig(mmu=10, majority_radius=1, passes=1).halo == 19
    assert RegularizationConfig(mmu=10, majority_radius=1).halo == 37
