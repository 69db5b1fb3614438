"""Pretrained encoders as features (``features.encoders``): a torch module run per chunk on the
gap-filled series, its output stored as static cube variables.

An encoder is given by import path (``module:factory``: ``factory()`` returns a torch
``nn.Module``) and a weights file (a local path or an fsspec URL) holding the module's state
dict (``torch.save(module.state_dict(), path)``). It reads the cube variables ``inputs`` (e.g.
``s2_red``, ``s2_nir``, ``s2_ndvi``: bands, indices or user features of the plan), each on
``dates`` dates, as a float32 tensor (pixels, dates, inputs), and returns (pixels, width). Its
output is written as ``width`` static (y, x) float32 variables ``<name>_e00``, ``<name>_e01``...
which are features like any band (named so in the feature table too). A pixel whose inputs are
not all finite (never valid, or owned by another tile) is NaN in every output.

Identity: the import path and the sha256 of the weights file's bytes enter the cube plan (so a
rerun with the same encoder skips finished chunks and a changed weights file rebuilds them); a
worker that finds other bytes than the plan's refuses to run rather than mix two encoders in
one cube.

torch is imported only when an encoder is loaded or run: a cube without encoders never needs it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.cube.userfeatures import import_callable
from pipeline.errors import ManifestError

FIELD = "features.encoders"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_BATCH_SIZE = 4096


@dataclass(frozen=True)
class EncoderConfig:
    """One entry of ``features.encoders``, as the manifest checked it."""

    name: str
    module: str
    weights: str
    inputs: tuple[str, ...]
    dates: int
    width: int
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass(frozen=True)
class EncoderPlan:
    """An encoder as a cube plan holds it: the config and the digest of its weights' bytes."""

    name: str
    module: str
    weights: str
    weights_sha256: str
    inputs: tuple[str, ...]
    dates: int
    width: int
    batch_size: int = DEFAULT_BATCH_SIZE

    @property
    def variables(self) -> tuple[str, ...]:
        """Its static cube variables (and feature names): ``<name>_e00`` .. in output order."""
        return encoder_variables(self.name, self.width)


def encoder_variables(name: str, width: int) -> tuple[str, ...]:
    digits = max(2, len(str(width - 1)))
    return tuple(f"{name}_e{i:0{digits}d}" for i in range(width))


def weights_sha256(url: str) -> str:
    """The sha256 of the weights file's bytes (read through fsspec: a path or a URL).

    Planning asks once per tile and period: the digest is kept per process while the file's
    size and modification stamp stay the same (a worker checks the bytes it loads anyway)."""
    stamp = _stamp(url)
    if stamp is None:
        return _sha256(url)
    return _cached_sha256(url, stamp)


def _stamp(url: str) -> tuple[str, ...] | None:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
    except Exception:  # unreadable: _sha256 says so, with the fix
        return None
    changed = next(
        (info[k] for k in ("mtime", "LastModified", "ETag", "last_modified") if info.get(k)),
        None,
    )
    return None if changed is None else (str(info.get("size")), str(changed))


@lru_cache(maxsize=16)
def _cached_sha256(url: str, stamp: tuple[str, ...]) -> str:
    return _sha256(url)


def _sha256(url: str) -> str:
    digest = hashlib.sha256()
    for block in _read_blocks(url):
        digest.update(block)
    return digest.hexdigest()


def _read_blocks(url: str, size: int = 1 << 22) -> Any:
    import fsspec

    try:
        with fsspec.open(url, "rb") as stream:
            while block := stream.read(size):
                yield block
    except (OSError, ValueError, ImportError) as exc:
        raise ManifestError(
            f"encoder weights file {url!r} cannot be read ({type(exc).__name__}: {exc})",
            fix="give the path or URL of the state dict saved with torch.save, readable from "
            "the driver and every worker (credentials in the environment)",
            field=FIELD,
        ) from None


def plan_encoders(configs: Sequence[EncoderConfig]) -> tuple[EncoderPlan, ...]:
    """Each encoder with the digest of its weights file as it is now (read once, here)."""
    return tuple(
        EncoderPlan(
            c.name,
            c.module,
            c.weights,
            weights_sha256(c.weights),
            tuple(c.inputs),
            c.dates,
            c.width,
            c.batch_size,
        )
        for c in configs
    )


def check_encoder_inputs(
    encoders: Sequence[EncoderPlan], dates_of: Mapping[str, int], reserved: Sequence[str]
) -> None:
    """Each encoder's inputs against the cube plan: variables of the plan (``dates_of``: each
    time-series variable and its number of dates) on as many dates as the encoder expects,
    and its output names free (not a variable, a sensor's prefix or another encoder's)."""
    taken = set(reserved)
    for encoder in encoders:
        unknown = [v for v in encoder.inputs if v not in dates_of]
        if unknown:
            raise ManifestError(
                f"encoder {encoder.name!r} reads {unknown}, which the cube does not have "
                f"(its variables: {', '.join(dates_of)})",
                fix="list cube variables as inputs (a sensor's name, '_', and a band, index or "
                "user feature: e.g. s2_ndvi)",
                field=FIELD,
            )
        wrong = {v: dates_of[v] for v in encoder.inputs if dates_of[v] != encoder.dates}
        if wrong:
            raise ManifestError(
                f"encoder {encoder.name!r} expects {encoder.dates} dates but the cube gives "
                f"{wrong} (dates per input); an encoder reads every date of its inputs",
                fix="set the encoder's dates to the cube's, or change spec.period or the "
                "sensor's date_step_days so that the cube has the dates the encoder was "
                "trained on",
                field=FIELD,
            )
        clash = sorted(set(encoder.variables) & taken) or (
            [encoder.name] if encoder.name in taken else []
        )
        if clash:
            raise ManifestError(
                f"encoder {encoder.name!r} would write {clash}, a name already in the cube",
                fix="give the encoder another name",
                field=FIELD,
            )
        taken.update((encoder.name, *encoder.variables))


@lru_cache(maxsize=8)
def load_encoder(module: str, weights: str, sha256: str) -> Any:
    """The encoder's module with its weights, in eval mode (cached per process: a worker loads
    it once). The weights' bytes must still be those the plan was made with."""
    import io

    import torch

    factory = _factory(module)
    try:
        network = factory()
    except Exception as exc:  # any failure is the user's factory's
        raise ManifestError(
            f"encoder factory {module!r} raised {type(exc).__name__}: {exc}",
            fix="make the factory build the module with no arguments",
            field=FIELD,
        ) from None
    if not isinstance(network, torch.nn.Module):
        raise ManifestError(
            f"encoder factory {module!r} returned {type(network).__name__}, not a torch nn.Module",
            fix="return the encoder's nn.Module (its weights are loaded from the weights file)",
            field=FIELD,
        )
    data = b"".join(_read_blocks(weights))
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ManifestError(
            f"encoder weights file {weights!r} changed since the run was planned",
            fix="run again: the cube chunks of the new weights are rebuilt",
            field=FIELD,
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:
        raise ManifestError(
            f"encoder weights {weights!r} do not load into {module!r} "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})",
            fix="save the module's state dict (torch.save(module.state_dict(), path)) from the "
            "module the factory builds",
            field=FIELD,
        ) from None
    return network.eval()


def _factory(path: str) -> Any:
    return import_callable(
        path,
        what="encoder",
        field=FIELD,
        missing_fix="name a function or class of that module that builds the encoder",
    )


def encode(encoder: EncoderPlan, series: Mapping[str, np.ndarray]) -> np.ndarray:
    """(width, h, w) float32: the encoder on every pixel whose inputs are all finite, NaN
    elsewhere. ``series``: cube variable -> (dates, h, w) float32 values (as stored).

    Pixels go through in batches of ``batch_size`` under ``torch.inference_mode()``, on the
    dask worker's threads when run in a worker."""
    import torch

    from pipeline.learn.torch.runtime import use_worker_threads

    network = load_encoder(encoder.module, encoder.weights, encoder.weights_sha256)
    _, height, width = series[encoder.inputs[0]].shape
    flat = [series[v].reshape(encoder.dates, -1) for v in encoder.inputs]  # (dates, pixels)
    usable = np.ones(height * width, dtype=bool)
    for values in flat:
        usable &= np.isfinite(values).all(axis=0)
    out = np.full((height * width, encoder.width), np.nan, dtype=np.float32)
    use_worker_threads()
    step = max(1, encoder.batch_size)
    with torch.inference_mode():
        for start in range(0, usable.size, step):
            keep = usable[start : start + step]
            if not keep.any():
                continue
            # A range of pixels, or the usable ones of it; transposed batch by batch into the
            # (pixels, dates, inputs) layout the encoder reads (a batch stays in cache).
            chosen = slice(start, start + keep.size) if keep.all() else start + np.flatnonzero(keep)
            batch = np.empty((int(keep.sum()), encoder.dates, len(flat)), dtype=np.float32)
            for c, values in enumerate(flat):
                batch[:, :, c] = values[:, chosen].T
            out[chosen] = _checked_output(encoder, network(torch.from_numpy(batch)), len(batch))
    return np.ascontiguousarray(out.T).reshape(encoder.width, height, width)


def _checked_output(encoder: EncoderPlan, result: Any, n: int) -> np.ndarray:
    import torch

    shape = tuple(result.shape) if isinstance(result, torch.Tensor) else None
    if shape != (n, encoder.width):
        raise ManifestError(
            f"encoder {encoder.name!r} ({encoder.module}) returned "
            f"{type(result).__name__} of shape {shape} for a batch of {n} pixel(s) of "
            f"{encoder.dates} dates x {len(encoder.inputs)} inputs; expected ({n}, "
            f"{encoder.width})",
            fix="set the encoder's width to its output size, or make its forward return one "
            "vector per pixel (a tensor of shape (pixels, width))",
            field=FIELD,
        )
    return result.detach().to(torch.float32).cpu().numpy()


def check_encoders(encoders: Sequence[EncoderPlan]) -> None:
    """Load each encoder and run it on a small synthetic batch (a wrong factory, weights file
    or output shape fails the run's planning, before any chunk is built)."""
    rng = np.random.default_rng(0)
    for encoder in encoders:
        series = {
            v: rng.uniform(0.01, 0.5, size=(encoder.dates, 2, 2)).astype(np.float32)
            for v in encoder.inputs
        }
        encode(encoder, series)
