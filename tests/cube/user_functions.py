"""User feature functions for tests (imported by path, as a user's module would be)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def red_edge_like(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A good function: two named features shaped like the bands."""
    nir, red = bands["nir"], bands["red"]
    return {
        "nir_minus_red": nir - red,
        "green_share": bands["green"] / (nir + red + bands["green"]),
    }


def wrong_shape(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"mean_nir": np.nanmean(bands["nir"], axis=0)}  # (y, x): the date axis is lost


def bad_name(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"NDRE-1": bands["nir"]}


def raises(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    raise ZeroDivisionError("the user's bug")


def needs_swir(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"nbr": bands["nir"] - bands["swir"]}


def clashes(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"ndvi": bands["nir"]}


def not_a_dict(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    return bands["nir"]
