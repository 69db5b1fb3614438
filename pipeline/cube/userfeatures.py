"""User feature functions given by import path (``module:function``).

Contract: ``fn(bands)`` gets one sensor's gap-filled bands by name, each a (dates, y, x) float32
array (physical values, NaN where a pixel was never valid), and returns a mapping of new feature
names (lowercase ids) to arrays of that same shape. Each function is checked twice before any
chunk is built: on a small synthetic window when the cube is planned (its names are learnt
there), and on a small window of real data (``check_user_features`` in build.py). Any exception,
wrong type, wrong shape or bad name is a ``ManifestError`` naming the function.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.errors import ManifestError

UserFunction = Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD = "features.user_functions"


def import_callable(path: str, *, what: str, field: str, missing_fix: str) -> Any:
    """The callable ``module:attribute`` names; a ManifestError naming ``what`` (e.g. "user
    function") when the module does not import or has no such callable."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure is the user's module's
        raise ManifestError(
            f"{what} {path!r}: module {module_name!r} cannot be imported "
            f"({type(exc).__name__}: {exc})",
            fix="install the module on the driver and every worker (or put it on PYTHONPATH) "
            "and check the spelling",
            field=field,
        ) from None
    found = getattr(module, attribute, None)
    if found is None or not callable(found):
        raise ManifestError(
            f"{what} {path!r}: module {module_name!r} has no callable {attribute!r}",
            fix=missing_fix,
            field=field,
        )
    return found


@lru_cache(maxsize=64)
def load_user_function(path: str) -> UserFunction:
    """Import ``module:function`` (cached per process: workers import it once)."""
    function: UserFunction = import_callable(
        path,
        what="user function",
        field=_FIELD,
        missing_fix="give the name of a function defined in that module",
    )
    return function


def apply_user_function(
    path: str,
    bands: Mapping[str, np.ndarray],
    *,
    sensor: str,
    reserved: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Run one user function on ``bands`` and check what it returns."""
    function = load_user_function(path)
    shape = next(iter(bands.values())).shape
    try:
        result = function({k: v.copy() for k, v in bands.items()})
    except KeyError as exc:
        raise ManifestError(
            f"user function {path!r} asked for band {exc} that sensor {sensor!r} does not have "
            f"(its bands: {', '.join(bands)})",
            fix="add the band to the sensor's bands, or use only these band names",
            field=_FIELD,
        ) from None
    except Exception as exc:
        raise ManifestError(
            f"user function {path!r} raised {type(exc).__name__}: {exc} on sensor {sensor!r} "
            f"bands of shape {shape}",
            fix="make it work on float32 arrays of shape (dates, y, x) that contain NaN",
            field=_FIELD,
        ) from None
    if not isinstance(result, Mapping) or not result:
        raise ManifestError(
            f"user function {path!r} returned {type(result).__name__}, not a non-empty dict of "
            "feature name -> array",
            fix="return e.g. {'ndre': (nir - rededge) / (nir + rededge)}",
            field=_FIELD,
        )
    out: dict[str, np.ndarray] = {}
    for name, value in result.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ManifestError(
                f"user function {path!r} returned a feature named {name!r}; names must be "
                "lowercase ids (letters, digits, _)",
                fix="rename the feature, e.g. 'ndre'",
                field=_FIELD,
            )
        if name in reserved:
            raise ManifestError(
                f"user function {path!r} returned feature {name!r}, which is already a band, "
                f"an index or another function's feature of sensor {sensor!r}",
                fix="give the feature another name",
                field=_FIELD,
            )
        array = np.asarray(value)
        if array.shape != shape or not np.issubdtype(array.dtype, np.number):
            raise ManifestError(
                f"user function {path!r} returned feature {name!r} of shape {array.shape} and "
                f"dtype {array.dtype}; the bands have shape {shape}",
                fix="return one number per date and pixel: an array shaped like the bands",
                field=_FIELD,
            )
        out[name] = array.astype(np.float32, copy=False)
    return out


def probe_user_features(
    paths: Sequence[str], band_names: Sequence[str], *, sensor: str, reserved: Sequence[str]
) -> tuple[str, ...]:
    """The feature names the functions return, learnt on a small synthetic series (pure)."""
    rng = np.random.default_rng(0)
    bands = {name: rng.uniform(0.01, 0.5, size=(3, 4, 4)).astype(np.float32) for name in band_names}
    names: list[str] = []
    for path in paths:
        produced = apply_user_function(path, bands, sensor=sensor, reserved=[*reserved, *names])
        names.extend(produced)
    return tuple(names)
