"""How a flat feature vector becomes a (time, channels) series: derived from the feature names.

Cube features are named ``<sensor>_<variable>_<YYYYMMDD>`` and sample tables ``<band>_<YYYYMMDD>``
or ``<band>_t<NN>`` (date index, when samples cover different years). The time token is the part
after the last underscore; the rest names the channel. The layout is parsed, never assumed from
counts, and stored in the model's config so that inference reshapes exactly as training did.

Encoder features (``<encoder>_e00``, ``<encoder>_e01``...: one value per pixel, no date; see
``features.encoders``) are static channels: the same value on every date of the series, so a
temporal model reads them beside the bands (the common way of feeding static covariates to a
sequence model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from pipeline.errors import ModelError

_NAME = re.compile(r"^(?P<channel>.+)_(?P<time>\d{8}|t\d+)$")
_STATIC = re.compile(r"^[a-z][a-z0-9_]*_e\d{2,3}$")  # an encoder's output (features.encoders)


@dataclass(frozen=True)
class TemporalLayout:
    """Channels and times of a feature vector, and where each (time, channel) value sits in it.

    ``index[t][c]`` is the position in the feature vector of channel ``c`` at time ``t``;
    ``positions`` are the times as numbers for positional encodings: days since the first date,
    or the date index.
    """

    channels: tuple[str, ...]
    times: tuple[str, ...]
    positions: tuple[float, ...]
    index: tuple[tuple[int, ...], ...]

    @property
    def n_times(self) -> int:
        return len(self.times)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def gather_index(self) -> np.ndarray:
        """(n_times * n_channels,) positions: features[:, gather] reshapes to (n, T, C)."""
        return np.asarray(self.index, dtype=np.int64).reshape(-1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "times": list(self.times),
            "positions": list(self.positions),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], feature_names: Sequence[str]) -> TemporalLayout:
        """Rebuild from a saved config, checking it against the feature names it came with."""
        layout = from_feature_names(feature_names)
        saved = (tuple(data["channels"]), tuple(data["times"]), tuple(data["positions"]))
        if saved != (layout.channels, layout.times, layout.positions):
            raise ModelError(
                "the model's saved temporal layout does not match its feature names",
                fix="the model folder was edited or mixed up; train the model again",
                field="model",
            )
        return layout


def _split(name: str) -> tuple[str, str]:
    match = _NAME.match(name)
    if match is None:
        raise ModelError(
            f"feature {name!r} does not end with a date (_YYYYMMDD) or a date index (_t0, _t1...)",
            fix="temporal models (tempcnn, ltae, a temporal module) need features named "
            "<variable>_<YYYYMMDD> as in sitsflow cubes; use architecture mlp or a scikit-learn "
            "estimator for other features",
            field="model.architecture",
        )
    return match["channel"], match["time"]


def _position(token: str, first: str) -> float:
    if token.startswith("t"):
        return float(int(token[1:]))
    try:
        when = datetime.strptime(token, "%Y%m%d").date()
        start = datetime.strptime(first, "%Y%m%d").date()
    except ValueError:
        raise ModelError(
            f"time token {token!r} of a feature name is not a valid date YYYYMMDD",
            fix="name features <variable>_<YYYYMMDD> with real dates",
            field="model.architecture",
        ) from None
    return float((when - start).days)


def from_feature_names(feature_names: Sequence[str]) -> TemporalLayout:
    """Parse ``feature_names`` into a rectangular (time, channel) layout, or explain why not."""
    if not feature_names:
        raise ModelError("no features", fix="give at least one feature")
    where: dict[tuple[str, str], int] = {}
    channels: dict[str, None] = {}
    times_of: dict[str, list[str]] = {}
    static: dict[str, int] = {}
    for i, name in enumerate(feature_names):
        if _STATIC.match(name) and not _NAME.match(name):
            static[name] = i
            continue
        channel, token = _split(name)
        if (channel, token) in where:
            raise ModelError(
                f"feature {name!r} appears twice", fix="give every feature a unique name"
            )
        where[(channel, token)] = i
        channels.setdefault(channel, None)
        times_of.setdefault(channel, []).append(token)
    if not channels:
        raise ModelError(
            f"temporal models need time-series features, and the {len(static)} feature(s) given "
            "are all encoder outputs (one value per pixel, no date)",
            fix="keep the bands or indices as features too, or use architecture mlp or a "
            "scikit-learn estimator",
            field="model.architecture",
        )
    kinds = {t.startswith("t") for ts in times_of.values() for t in ts}
    if len(kinds) > 1:
        raise ModelError(
            "feature names mix dates (_YYYYMMDD) and date indices (_tNN)",
            fix="name every feature of one table the same way",
            field="model.architecture",
        )
    reference_channel = next(iter(channels))
    times = sorted(set(times_of[reference_channel]), key=_sort_key)
    for channel, tokens in times_of.items():
        if sorted(set(tokens), key=_sort_key) != times:
            raise ModelError(
                f"temporal models need every variable on the same dates, but "
                f"{reference_channel!r} has {len(times)} date(s) "
                f"({times[0]}..{times[-1]}) and {channel!r} has {len(set(tokens))} "
                f"({min(tokens, key=_sort_key)}..{max(tokens, key=_sort_key)})",
                fix="give every sensor the same date_step_days, or use architecture mlp or a "
                "scikit-learn estimator, which take features on any dates",
                field="model.architecture",
            )
    index = tuple(
        (*(where[(c, t)] for c in channels), *static.values()) for t in times
    )  # a static channel's one value at every time
    positions = tuple(_position(t, times[0]) for t in times)
    return TemporalLayout((*channels, *static), tuple(times), positions, index)


def _sort_key(token: str) -> tuple[int, str]:
    return (int(token[1:]), "") if token.startswith("t") else (0, token)
