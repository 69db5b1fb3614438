"""A run's model trained from a sample table that another tool extracted (sits, iota2, eo-learn).

The table (long or wide form, :mod:`pipeline.samples.tables`) is checked against the features the
run's cube gives: the same bands and the same date grid (or the same number of dates, for a run
whose features are positions in the season). The model is saved as a sitsflow model folder
whose contract carries the run's feature names, so the run applies it as it is
(``model: {kind: external, path: <folder>}``) and refuses it if the run's features change.

Band names match the run's series without regard to case, with or without the sensor prefix
(a table's ``NDVI`` is the run's ``s2_ndvi`` when the run has one sensor with that band).
Class labels that are integer codes are kept as codes (so they meet the reference's codes);
other labels get the codes 1..K of their sorted names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.errors import InputDataError
from pipeline.learn.config import ModelConfig
from pipeline.learn.contract import ModelContract, seasonal_features
from pipeline.model import GridSpec
from pipeline.samples.tables import FEATURE_NAME, SampleTable, conform_to_contract


class RunSettings(Protocol):
    """What a run's configuration gives here (the sections of the run, by their names)."""

    @property
    def sensors(self) -> Sequence[Any]: ...
    @property
    def period(self) -> Any: ...
    @property
    def features(self) -> Any: ...
    @property
    def compute(self) -> Any: ...
    @property
    def reference(self) -> Any: ...
    @property
    def also_map(self) -> Sequence[Any]: ...
    @property
    def sampling(self) -> Any: ...
    @property
    def task(self) -> str: ...
    @property
    def model(self) -> Any: ...


def run_feature_names(spec: RunSettings) -> list[str]:
    """The features of the run's cube, in order: sensors, variables, dates (reads no data)."""
    from pipeline.catalog.sensors import sensor_profiles
    from pipeline.cube.plan import plan_cube

    profiles: list[tuple[Any, list[Any]]] = [
        (p, []) for s in spec.sensors for p in sensor_profiles(s)
    ]
    # Reference features with their own windows (start_field) give samples of several seasons.
    seasonal = seasonal_features(spec.reference.start_field is not None, spec.also_map)
    nowhere = GridSpec("EPSG:4326", (1.0, 0.0, 0.0, 0.0, -1.0, 1.0), 1, 1)
    plan = plan_cube(
        nowhere,
        profiles,
        spec.period.start,
        spec.period.end,
        spec.features.indices,
        spec.compute.chunk_size,
        user_functions=spec.features.user_functions,
        season_names=seasonal,
    )
    return plan.feature_names


def _series(names: list[str]) -> list[str]:
    """The series (``<sensor>_<variable>``) of feature names, in order."""
    seen: list[str] = []
    for name in names:
        match = FEATURE_NAME.match(name)
        assert match is not None, name  # a cube's feature names are all series
        if match["band"] not in seen:
            seen.append(match["band"])
    return seen


def renamed_to_run(table: SampleTable, names: list[str]) -> SampleTable:
    """The table's bands given the run's series names where they match (case aside, sensor
    prefix optional); other bands are left as they are (and refused by the contract check)."""
    series = _series(names)
    by_name = {s.lower(): s for s in series}
    # Without the sensor prefix: only where it names one series (one sensor has the band).
    short: dict[str, list[str]] = {}
    for s in series:
        short.setdefault(s.split("_", 1)[-1].lower(), []).append(s)

    def run_name(band: str) -> str:
        one = short.get(band.lower(), [])
        return by_name.get(band.lower()) or (one[0] if len(one) == 1 else band)

    renamed = []
    for feature in table.feature_names:
        match = FEATURE_NAME.match(feature)
        renamed.append(f"{run_name(match['band'])}_{match['time']}" if match else feature)
    bands = [run_name(band) for band in table.bands]
    return replace(table, feature_names=tuple(renamed), bands=tuple(bands))


def label_codes(table: SampleTable) -> tuple[np.ndarray, dict[int, str]]:
    """Class codes of the table's samples, and the name of each code."""
    labels = np.asarray(table.labels).astype(str)
    try:
        numbers = labels.astype(np.float64)
    except ValueError:
        numbers = None
    if numbers is not None and np.all(np.mod(numbers, 1) == 0):
        codes = numbers.astype(np.int64)
        return codes, {int(c): str(int(c)) for c in np.unique(codes)}
    return table.codes, {c.code: c.name for c in table.legend}


@dataclass(frozen=True)
class TableTraining:
    """What ``train_from_table`` fitted: where the model is, on what, for which features."""

    folder: Path
    contract: ModelContract
    samples: int
    classes: dict[int, str]


def train_from_table(
    table: SampleTable,
    spec: RunSettings,
    out: Path,
    *,
    model: ModelConfig | None = None,
    source: str,
) -> TableTraining:
    """Fit the run's model (or ``model``) on the table, checked against the run's features,
    and save it into ``out`` (written whole, or not at all)."""
    from pipeline.learn import as_model_config, save_model, train_model

    model_spec = as_model_config(model or spec.model)
    if model_spec.kind == "external":
        raise InputDataError(
            "the run's model is external (kind: external), there is nothing to train",
            fix="give --estimator, or a manifest whose model is sklearn or torch",
            field="model.kind",
        )
    if spec.task != "classification":
        raise InputDataError(
            f"sample tables carry class labels; the run's task is {spec.task!r}",
            fix="train from a table for a classification run",
            field="task",
        )
    names = run_feature_names(spec)
    needed = ModelContract(estimator="", params={}, feature_names=tuple(names), classes=())
    matched = conform_to_contract(renamed_to_run(table, names), needed)
    codes, classes = label_codes(matched)
    if len(classes) < 2:
        raise InputDataError(
            f"the table {source!r} has {len(classes)} class; a classifier needs at least two",
            fix="give a table with samples of two or more classes",
        )
    groups = matched.groups if matched.groups is not None else matched.location_ids
    fitted, contract = train_model(
        model_spec,
        np.ascontiguousarray(matched.features, dtype=np.float32),
        codes,
        names,
        spec.sampling.seed,
        task="classification",
        groups=np.asarray(groups),
    )
    record: dict[str, Any] = {
        **contract.training,
        "table": source,
        "samples": len(matched),
        "class_names": {str(k): v for k, v in classes.items()},
    }
    contract = replace(contract, training=record)
    save_model(fitted, contract, out)
    return TableTraining(out, contract, len(matched), classes)
