"""Patch samples: cut around the sample pixels from the cube, dense labels inside, the split by
polygon kept (a validation polygon's pixels are never a training label, even inside a training
patch), NaN off the grid's edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.samples.patches import (
    IGNORE,
    TRAIN_SIDE,
    VALIDATION_SIDE,
    PatchSource,
    patch_origins,
    read_patches,
    write_patches,
)
from pipeline.samples.split import TRAIN, VALIDATION
from tests.patch.helpers import NAMES, VARIABLES, write_cube

HEIGHT, WIDTH, SIZE = 30, 27, 8


def _pixels() -> pd.DataFrame:
    """A training polygon (class 1, rows 2-5, cols 3-6) beside a validation polygon (class 2,
    rows 2-5, cols 7-9), a large training polygon (class 3) reaching the grid's bottom right,
    and a training point (class 2)."""
    frames = []
    for pid, label, side, rows, cols in (
        (0, 1, TRAIN, range(2, 6), range(3, 7)),
        (1, 2, VALIDATION, range(2, 6), range(7, 10)),
        (2, 3, TRAIN, range(18, 30), range(14, 27)),
        (3, 2, TRAIN, range(12, 13), range(1, 2)),
    ):
        rr, cc = np.meshgrid(list(rows), list(cols), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "row": rr.ravel(),
                    "col": cc.ravel(),
                    "polygon_id": pid,
                    "label": label,
                    "split": side,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_patches_cover_every_sample_pixel_and_stay_on_the_grid() -> None:
    pixels = _pixels()
    origins = patch_origins(pixels, SIZE, HEIGHT, WIDTH)
    assert len(origins) == len({tuple(o) for o in origins})
    assert (origins >= 0).all()
    assert (origins[:, 0] + SIZE <= HEIGHT).all() and (origins[:, 1] + SIZE <= WIDTH).all()
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for r0, c0 in origins:
        covered[r0 : r0 + SIZE, c0 : c0 + SIZE] = True
    assert covered[pixels["row"], pixels["col"]].all()


def test_patch_store_labels_masks_and_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stack = rng.random((len(NAMES), HEIGHT, WIDTH), dtype=np.float32)
    cube = str(tmp_path / "cube.zarr")
    write_cube(cube, stack, 16)
    pixels = _pixels()
    source = PatchSource(None, cube, VARIABLES, HEIGHT, WIDTH)
    path = str(tmp_path / "patches.zarr")
    summary = write_patches(path, [source], pixels, SIZE, NAMES)
    patches = read_patches(path)
    assert summary["patches"] == len(patches.origin) > 3
    assert patches.features.shape == (len(patches.origin), len(NAMES), SIZE, SIZE)
    for i, (r0, c0) in enumerate(patches.origin):
        np.testing.assert_array_equal(patches.features[i], stack[:, r0 : r0 + SIZE, c0 : c0 + SIZE])
        # Every label is a sample pixel with its own class, polygon and side.
        r, c = np.nonzero(patches.label[i] != IGNORE)
        mine = pixels.set_index(["row", "col"]).loc[list(zip(r + r0, c + c0, strict=True))]
        np.testing.assert_array_equal(patches.label[i][r, c], mine["label"])
        np.testing.assert_array_equal(patches.polygon[i][r, c], mine["polygon_id"])
        sides = np.where(mine["split"] == TRAIN, TRAIN_SIDE, VALIDATION_SIDE)
        np.testing.assert_array_equal(patches.split[i][r, c], sides)
    # The first polygon's patch holds the validation polygon beside it: masked out of training.
    shared = [
        i
        for i in range(len(patches.origin))
        if (patches.polygon[i] == 0).any() and (patches.polygon[i] == 1).any()
    ]
    assert shared
    x, y, g = patches.training()
    assert not np.isin(g, [1]).any()  # no validation polygon among the training labels
    assert set(np.unique(y[y != IGNORE])) == {1, 2, 3}  # the point is a sparse label
    assert len(x) == len(y) == len(g)
    assert summary["masked_validation_pixels"] > 0


def test_patches_of_a_grid_smaller_than_a_patch_are_padded_with_nan(tmp_path: Path) -> None:
    stack = np.ones((len(NAMES), 5, 6), np.float32)
    cube = str(tmp_path / "small.zarr")
    write_cube(cube, stack, 16)
    pixels = pd.DataFrame(
        {"row": [1, 2], "col": [2, 3], "polygon_id": [0, 0], "label": [4, 4], "split": TRAIN}
    )
    path = str(tmp_path / "p.zarr")
    write_patches(path, [PatchSource(None, cube, VARIABLES, 5, 6)], pixels, SIZE, NAMES)
    patches = read_patches(path)
    assert patches.origin.tolist() == [[0, 0]]
    assert (
        np.isnan(patches.features[0, :, 5:]).all() and np.isnan(patches.features[0, :, :, 6:]).all()
    )
    assert (patches.features[0, :, :5, :6] == 1).all()
