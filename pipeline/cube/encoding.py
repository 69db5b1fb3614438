"""How the cube stores its time series: scaled int16 codes (the default) or float32.

With the ``int16`` encoding (``spec.outputs.cube_encoding``) each variable is quantized to a
fixed step and stored as int16 codes, as FORCE and iota2 store reflectances:

* reflectance bands, NDVI and NDWI: steps of 1e-4 (codes -32767..32767 cover -3.2767..3.2767);
* bands in decibels (``to_db``, e.g. Sentinel-1 in dB): steps of 0.01 dB;
* brightness: the step of the sensor's bands when they all share one;
* anything else (linear backscatter, user features, a brightness of mixed bands): float32.

The code -32768 stands for NaN (a pixel never valid, or owned by another tile). Encoding is
``round half to even(value * (1 / step))`` (in float64: exact for these steps), clipped to
-32767..32767; decoding is ``float32(code) * float32(step)``. The step stored as the CF
``scale_factor`` is the float32 value of the step, so that xarray's own decoding (in float64,
exact for these products) gives the same numbers once cast to float32, bit for bit.

Every path goes through the same functions: the chunk build quantizes its series in memory
(``quantize``: codes for the store, decoded values for the streamed path), and
``read_features`` decodes what it reads (``decode``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

if TYPE_CHECKING:
    from pipeline.catalog.sensors import BandRead

CUBE_ENCODINGS: tuple[str, ...] = ("int16", "float32")

FILL_CODE = -32768
"""The int16 code of NaN (never a valid value)."""
MAX_CODE = 32767
REFLECTANCE_STEP = 1e-4
DB_STEP = 0.01
RATIO_INDICES = ("ndvi", "ndwi")
"""Normalized differences: in [-1, 1] for non-negative bands, stored in steps of 1e-4."""


@dataclass(frozen=True)
class VariableEncoding:
    """The storage of one int16 variable: ``value = code * scale_factor``, ``FILL_CODE`` NaN."""

    scale_factor: float
    """The quantization step as planned (1e-4, 0.01); ``step`` is its float32 value."""

    dtype = "int16"
    fill_value = FILL_CODE

    def __post_init__(self) -> None:
        if not (self.scale_factor > 0 and np.isfinite(self.scale_factor)):
            raise ValueError(f"scale_factor must be a positive number, got {self.scale_factor!r}")

    @property
    def step(self) -> np.float32:
        """The step as the decoding multiplies by it."""
        return np.float32(self.scale_factor)

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any]) -> VariableEncoding:
        """The encoding of a stored int16 variable, from its CF attributes."""
        if "scale_factor" not in attributes:
            raise ValueError("an int16 cube variable needs a scale_factor attribute")
        fill = int(attributes.get("_FillValue", FILL_CODE))
        if fill != FILL_CODE:
            raise ValueError(f"an int16 cube variable's _FillValue must be {FILL_CODE}, got {fill}")
        return cls(float(attributes["scale_factor"]))


def band_encoding(band: BandRead, encoding: str) -> VariableEncoding | None:
    """How a band is stored (None: float32)."""
    if encoding == "float32":
        return None
    if band.to_db:
        return VariableEncoding(DB_STEP)
    if band.reflectance:
        return VariableEncoding(REFLECTANCE_STEP)
    return None


def series_encodings(
    bands: Sequence[BandRead],
    indices: Sequence[str],
    user_features: Sequence[str],
    encoding: str,
) -> tuple[VariableEncoding | None, ...]:
    """The storage of a sensor's series (bands, indices, user features, in that order)."""
    check_cube_encoding(encoding)
    of_bands = tuple(band_encoding(band, encoding) for band in bands)
    shared = of_bands[0] if of_bands and len(set(of_bands)) == 1 else None
    of_indices: list[VariableEncoding | None] = []
    for index in indices:
        if encoding == "float32":
            of_indices.append(None)
        elif index in RATIO_INDICES:
            of_indices.append(VariableEncoding(REFLECTANCE_STEP))
        else:  # brightness: in the units of the bands
            of_indices.append(shared)
    return (*of_bands, *of_indices, *(None for _ in user_features))


def check_cube_encoding(encoding: str) -> None:
    if encoding not in CUBE_ENCODINGS:
        raise ValueError(f"cube encoding must be one of {list(CUBE_ENCODINGS)}, got {encoding!r}")


# --- encode / decode -----------------------------------------------------------------------------


def _flat(array: np.ndarray, dtype: Any, what: str) -> np.ndarray:
    if array.dtype != dtype or not array.flags.c_contiguous:
        raise ValueError(
            f"{what} must be a C-contiguous {np.dtype(dtype)} array, got {array.dtype}"
        )
    return array.reshape(-1)


def _codes_out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.int16)
    if out.shape != shape:
        raise ValueError(f"codes must have the values' shape {shape}, got {out.shape}")
    return out


def encode(
    values: np.ndarray, encoding: VariableEncoding, out: np.ndarray | None = None
) -> np.ndarray:
    """int16 codes of float32 ``values`` (NaN -> fill value), into ``out`` when given."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    return quantize(values, encoding, out, write_back=False)


def quantize(
    values: np.ndarray,
    encoding: VariableEncoding,
    out: np.ndarray | None = None,
    *,
    write_back: bool = True,
) -> np.ndarray:
    """Encode ``values`` (a C-contiguous float32 array) and replace them by their decoded values,
    in one pass: returns the codes (``out`` when given), ``values`` then holds what a reader of
    the codes gets. ``write_back=False`` leaves ``values`` as they were (only the codes are
    wanted: a chunk on its way to the store)."""
    codes = _codes_out(out, values.shape)
    _encode_kernel(
        _flat(values, np.float32, "values"),
        _flat(codes, np.int16, "codes"),
        encoding.scale_factor,
        write_back,
    )
    return codes


def decode(
    codes: np.ndarray, encoding: VariableEncoding, out: np.ndarray | None = None
) -> np.ndarray:
    """float32 values of int16 ``codes`` (fill value -> NaN), into ``out`` when given."""
    codes = np.ascontiguousarray(codes, dtype=np.int16)
    if out is None:
        out = np.empty(codes.shape, dtype=np.float32)
    elif out.shape != codes.shape:
        raise ValueError(f"out must have the codes' shape {codes.shape}, got {out.shape}")
    _decode_kernel(codes.reshape(-1), _flat(out, np.float32, "out"), encoding.step)
    return out


@numba.njit(cache=True, nogil=True)
def _encode_kernel(
    values: np.ndarray, codes: np.ndarray, step: float, write_back: bool
) -> None:  # pragma: no cover  (compiled)
    # The value in units of the step, in float64: for the steps used (1e-4, 0.01) the inverse
    # is an integer and the product is exact, so the code is the nearest one (half to even).
    # Branch-free, so that LLVM vectorizes the loop (a division and branches per value made
    # this pass as slow as the Zarr write). The decoded value is ``_decode_kernel``'s.
    inverse = 1.0 / step
    step32 = np.float32(step)
    for i in range(values.shape[0]):
        value = values[i]
        present = value == value
        scaled = np.float64(value if present else np.float32(0)) * inverse
        code = np.int16(np.rint(min(max(scaled, -32767.0), 32767.0)))
        codes[i] = code if present else np.int16(FILL_CODE)
        if write_back:
            values[i] = np.float32(code) * step32 if present else value


@numba.njit(cache=True, nogil=True)
def _decode_kernel(
    codes: np.ndarray, out: np.ndarray, step: np.float32
) -> None:  # pragma: no cover  (compiled)
    for i in range(codes.shape[0]):
        code = codes[i]
        out[i] = np.nan if code == FILL_CODE else np.float32(code) * step
