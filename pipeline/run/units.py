"""Units of work and the ledger that records which are finished.

A stage cuts its work into units (a cube chunk, a model, a map file). A unit's identity is its
``digest``: a content hash of everything that decides its output (its parameters and the digests
of the units it reads from), so equal digests mean equal outputs. A unit is finished when the
ledger, kept in the run store beside the outputs, holds a record ``<stage>/<key>@<digest>.json``;
the record is written only after the unit's output is completely written. A rerun lists the
ledger (one listing per stage, no per-unit read), skips units whose record matches, and reruns the
others: after a crash, what was finished; after a parameter change, what the change touches.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time
from pathlib import PurePath
from typing import Any

import numpy as np

from pipeline.storage import RunStore

LEDGER = "state/ledger"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DIGEST_LENGTH = 32  # hex characters: 128 bits


# --- identity ------------------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """A JSON value that stands for ``value``: equal inputs give equal JSON, whatever the
    dict order, container type or numpy scalar type. Unknown types are refused (TypeError)
    rather than hashed by ``repr``, which could hold memory addresses or hide state."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, list | tuple):  # first: units hold long tuples of names
        return [v if type(v) is str else canonical(v) for v in value]
    if isinstance(value, int | np.integer) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            return {"__float__": repr(number)}
        return number
    if isinstance(value, datetime | date | time):
        return {"__time__": value.isoformat()}
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, enum.Enum):
        return canonical(value.value)
    if isinstance(value, np.ndarray):
        return _array(value)
    if hasattr(value, "__canonical__") and not isinstance(value, type):
        # Domain configs that replaced pydantic sections keep those sections' digests.
        return canonical(value.__canonical__())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.compare  # fields left out of equality (caches, options) are not identity
        }
        return {"__type__": type(value).__qualname__, **fields}
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic models
        return {"__type__": type(value).__qualname__, **canonical(value.model_dump(mode="json"))}
    if isinstance(value, Mapping):
        items = {_key_text(k): canonical(v) for k, v in value.items()}
        return {k: items[k] for k in sorted(items)}
    if isinstance(value, set | frozenset):
        members = [canonical(v) for v in value]
        return sorted(members, key=lambda m: json.dumps(m, sort_keys=True))
    if _is_frame(value):
        return _frame(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return {"__callable__": f"{value.__module__}:{value.__qualname__}"}
    raise TypeError(
        f"cannot hash a {type(value).__module__}.{type(value).__qualname__} into a unit digest; "
        "give the unit plain data (dataclasses, numbers, strings, arrays)"
    )


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(canonical(key), sort_keys=True, separators=(",", ":"))


def _array(array: np.ndarray) -> dict[str, Any]:
    if array.dtype == object:
        return {"__array__": [canonical(v) for v in array.tolist()], "shape": list(array.shape)}
    data = np.ascontiguousarray(array)
    digest = hashlib.sha256(data.view(np.uint8).reshape(-1).tobytes()).hexdigest()
    return {"__ndarray__": digest, "dtype": data.dtype.str, "shape": list(data.shape)}


def _is_frame(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, pd.DataFrame | pd.Series)


def _frame(value: Any) -> dict[str, Any]:
    import pandas as pd

    frame = value.to_frame() if isinstance(value, pd.Series) else value
    columns = {str(c): _array(np.asarray(frame[c].to_numpy())) for c in frame.columns}
    return {"__frame__": columns, "index": _array(np.asarray(frame.index.to_numpy()))}


def content_hash(*parts: Any) -> str:
    """The digest of ``parts``: sha256 of their canonical JSON, 32 hex characters."""
    text = json.dumps(
        canonical(list(parts)), sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_LENGTH]


# --- units ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Unit:
    """One unit of a stage: a key unique in the stage, its digest, and what its function gets.

    ``payload`` is small (a window, an index): what every unit shares goes in the stage's
    context, stored once. ``pixels`` counts the pixels it computes (for throughput).
    """

    stage: str
    key: str
    digest: str
    payload: Any = None
    pixels: int = 0

    def __post_init__(self) -> None:
        for name in ("stage", "key"):
            value = getattr(self, name)
            if not _KEY.match(value) or "@" in value:
                raise ValueError(
                    f"unit {name} {value!r} must be 1-200 letters, digits, '.', '_' or '-'"
                )
        if not re.fullmatch(f"[0-9a-f]{{{_DIGEST_LENGTH}}}", self.digest):
            raise ValueError(f"unit digest {self.digest!r} is not a content_hash() value")


def window_key(window: Any) -> str:
    """A stable key of a pixel window: ``r<row>-c<col>`` (chunks are unique by their corner)."""
    return f"r{window.row_off:06d}-c{window.col_off:06d}"


@dataclasses.dataclass(frozen=True)
class Record:
    """What the ledger keeps of a finished unit."""

    stage: str
    key: str
    digest: str
    session: str
    worker: str
    seconds: float
    finished: str
    summary: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Record:
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


class Ledger:
    """The finished units of a run, one small object per unit under ``state/ledger/<stage>/``."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    @staticmethod
    def _folder(stage: str) -> str:
        return f"{LEDGER}/{stage}"

    @staticmethod
    def _name(key: str, digest: str) -> str:
        return f"{key}@{digest}.json"

    def finished(self, stage: str) -> dict[str, set[str]]:
        """key -> digests with a record, from one listing of the stage's folder."""
        out: dict[str, set[str]] = {}
        for name in self.store.list_names(self._folder(stage)):
            if not name.endswith(".json") or "@" not in name:
                continue
            key, _, digest = name.removesuffix(".json").rpartition("@")
            out.setdefault(key, set()).add(digest)
        return out

    def stages(self) -> list[str]:
        """Stages that have a folder in the ledger."""
        if not self.store.remote:
            folder = self.store.local_path(LEDGER)
            return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        url = self.store.url(LEDGER)
        self.store._refresh(url)
        try:
            entries = self.store.fs.ls(url, detail=True)
        except FileNotFoundError:
            return []
        return sorted(str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries
                      if e.get("type") == "directory")  # fmt: skip

    def is_empty(self) -> bool:
        return not any(self.finished(stage) for stage in self.stages())

    def split(self, units: Sequence[Unit]) -> tuple[list[Unit], list[Unit]]:
        """(finished, to run): units whose current digest has a record, and the others."""
        done: list[Unit] = []
        todo: list[Unit] = []
        by_stage: dict[str, dict[str, set[str]]] = {}
        for unit in units:
            if unit.stage not in by_stage:
                by_stage[unit.stage] = self.finished(unit.stage)
            (done if unit.digest in by_stage[unit.stage].get(unit.key, set()) else todo).append(
                unit
            )
        return done, todo

    def write(self, record: Record) -> None:
        self.store.write_text(
            f"{self._folder(record.stage)}/{self._name(record.key, record.digest)}",
            record.to_json(),
        )

    def read(self, unit: Unit) -> Record | None:
        try:
            text = self.store.read_text(
                f"{self._folder(unit.stage)}/{self._name(unit.key, unit.digest)}"
            )
        except FileNotFoundError:
            return None
        return Record.from_json(text)

    def read_many(self, units: Sequence[Unit]) -> dict[str, Record]:
        """Records of ``units`` by key (the missing ones left out), read concurrently."""
        if not units:
            return {}
        with ThreadPoolExecutor(max_workers=16 if self.store.remote else 4) as pool:
            records = list(pool.map(self.read, units))
        return {u.key: r for u, r in zip(units, records, strict=True) if r is not None}

    def forget_stale(self, units: Iterable[Unit]) -> int:
        """Delete the records of ``units``' keys made with another digest; return how many.

        Called before those units run again: from the moment a unit starts overwriting its
        output, an older record of it is no longer true.
        """
        removed = 0
        by_stage: dict[str, dict[str, set[str]]] = {}
        for unit in units:
            if unit.stage not in by_stage:
                by_stage[unit.stage] = self.finished(unit.stage)
            for digest in sorted(by_stage[unit.stage].get(unit.key, set()) - {unit.digest}):
                self.store.remove(f"{self._folder(unit.stage)}/{self._name(unit.key, digest)}")
                removed += 1
        return removed

    def clear(self, stage: str, *, prefixes: Sequence[str] = ()) -> None:
        """Forget every unit of a stage (its store is about to be made anew), or only those
        whose key starts with one of ``prefixes`` (one tile's units and store)."""
        if not prefixes:
            self.store.remove(self._folder(stage))
            return
        for key, digests in self.finished(stage).items():
            if key.startswith(tuple(prefixes)):
                for digest in digests:
                    self.store.remove(f"{self._folder(stage)}/{self._name(key, digest)}")
