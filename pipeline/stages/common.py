"""What several stages share: unit key prefixes and the forms plans take in digests."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from pipeline.cube.plan import CubePlan
from pipeline.model import Acquisition


def tile_prefix(tile: str | None) -> str:
    """The prefix of a tile's unit keys (none in a single-grid run)."""
    return "" if tile is None else f"{tile}-"


_SIGNED = re.compile(
    r"[?&](X-Amz-Signature|X-Amz-Credential|X-Goog-Signature|sig|signature|token|se|st)=",
    re.IGNORECASE,
)


def unsigned_href(href: str) -> str:
    """``href`` without the query string of a signed URL (Planetary Computer SAS tokens,
    presigned S3 URLs): signatures expire and change, the file they open does not."""
    return href.split("?", 1)[0] if _SIGNED.search(href) else href


def unsigned(acquisitions: Any) -> list[Any]:
    """Acquisitions with unsigned asset hrefs, for digests: a re-signed catalog reruns nothing."""
    out = []
    for acquisition in acquisitions:
        assets = {
            key: dataclasses.replace(ref, href=unsigned_href(ref.href))
            for key, ref in acquisition.assets.items()
        }
        out.append(dataclasses.replace(acquisition, assets=assets))
    return out


def cube_identity(plan: CubePlan) -> CubePlan:
    """The plan as it enters digests: every field, with unsigned hrefs."""
    sensors = tuple(
        dataclasses.replace(s, acquisitions=tuple(unsigned(s.acquisitions))) for s in plan.sensors
    )
    return dataclasses.replace(plan, sensors=sensors)


def within(acquisitions: Sequence[Acquisition], start: Any, end: Any) -> list[Acquisition]:
    """The acquisitions dated start .. end (inclusive), as discovery of that period finds."""
    return [a for a in acquisitions if start <= a.datetime.date() <= end]


def frame_for_digest(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns of ``frame`` that decide a digest, in a stable order."""
    present = [c for c in columns if c in frame.columns]
    return frame[present].reset_index(drop=True)


FINAL_RUN = -1
"""The run index of the model trained on every sample pixel (``sampling.final_model: all``)."""


def split_column(run: int) -> str:
    """The samples table's column with run ``run``'s side of each pixel (train, validation,
    or empty: a pixel only another run uses); ``split_final`` for the final model (train or
    empty: its selection over both sides of the split)."""
    if run == FINAL_RUN:
        return "split_final"
    return "split" if run == 0 else f"split_r{run}"
