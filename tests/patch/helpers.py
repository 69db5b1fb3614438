"""A tiny float cube store on a grid that is not a multiple of the chunk, and tiny patch networks
(few weights, one torch thread: the 2-core CI machine is shared by other test processes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import zarr

from pipeline.learn.config import ModelConfig, PatchConfig, TrainingConfig
from pipeline.model import GridSpec

DATES = ("20200101", "20200201", "20200301")
NAMES = tuple(f"s2_{band}_{d}" for band in ("red", "nir") for d in DATES)
VARIABLES = (("s2_red", "s2_time"), ("s2_nir", "s2_time"))
TINY = {"d_model": 8, "n_head": 2, "d_k": 4, "width": 8}


def grid(height: int, width: int) -> GridSpec:
    return GridSpec("EPSG:32633", (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), width, height)


def write_cube(path: str, stack: np.ndarray, chunk: int) -> None:
    """``stack`` (6, h, w): red then nir on the three dates, as a cube store's two variables."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    for index, (name, _dim) in enumerate(VARIABLES):
        part = stack[3 * index : 3 * index + 3]
        array = group.create_array(
            name,
            shape=part.shape,
            chunks=(3, chunk, chunk),
            dtype="float32",
            fill_value=np.float32(np.nan),
        )
        array[:] = part


def patch_model(
    architecture: str = "utae", size: int = 16, stride: int = 8, epochs: int = 3, **training: object
) -> ModelConfig:
    return ModelConfig(
        kind="torch_patch",
        architecture=architecture,
        params=TINY if architecture == "utae" else {"width": 8},
        patch=PatchConfig(size=size, stride=stride),
        training=TrainingConfig(
            epochs=epochs,
            batch_size=8,
            patience=2,
            device="cpu",
            **training,  # type: ignore[arg-type]
        ),
    )


@contextmanager
def one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def toy_patches(
    n: int = 12, size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches whose labelled square's class shows in its red band, with its polygon ids."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, len(NAMES), size, size), dtype=np.float32)
    y = np.full((n, size, size), -1, np.int64)
    g = np.full((n, size, size), -1, np.int64)
    for i in range(n):
        code = i % 3 + 1
        y[i, 4:10, 4:10] = code
        g[i, 4:10, 4:10] = i
        x[i, :3, 4:10, 4:10] += code
    return x, y, g
