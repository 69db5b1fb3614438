"""Where an error's field is, as the user knows it: one table from domain keys to places.

Library code raises ``SitsflowError(..., field=KEY)`` with a domain key: the dotted path in
``RunConfig`` terms (``model.params``, ``reference.label_field``, ``sensors[0].catalog.url``) or
the name of a library argument (``folds``, ``group_by``). The edges (the CLI, the operator)
call :func:`locate` before printing, so the user reads the manifest path
(``spec.model.params``) after ``sitsflow run``, and the option (``--param``) after ``sitsflow
crossval`` or ``sitsflow train``.

The manifest part of the table is read from ``RunSpec`` itself, so a new manifest field has its
key without an edit here; library arguments and CLI options are listed below.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from pipeline.errors import SitsflowError
from pipeline.manifest.run import RunSpec

__all__ = ["FIELDS", "Command", "Place", "domain_key", "locate", "place_of"]

Command = Literal["run", "crossval", "train"]


class Place(NamedTuple):
    """Where a domain key is set: its manifest path, and the options of the table commands."""

    manifest: str | None = None
    crossval: str | None = None
    train: str | None = None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _spec_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every dotted field path of ``model`` (list items and dict values have no index here)."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key
        inner = _model_of(info.annotation)
        if inner is not None:
            yield from _spec_keys(inner, f"{key}.")


# Library arguments with no manifest field (cross-validation and table training options,
# report and STAC arguments), and the CLI options that set keys, per command.
_ARGUMENTS = ("folds", "repeats", "train_fraction", "group_by", "groups", "method", "legend")
_CROSSVAL = {
    "folds": "--folds",
    "repeats": "--repeats",
    "train_fraction": "--train-fraction",
    "group_by": "--group-by",
    "model": "--estimator/--param",
    "model.estimator": "--estimator",
    "model.params": "--param",
    "model.standardize": "--standardize",
}
_READ_MANIFEST = ("run", "train")  # crossval takes a table and options only
_TRAIN = {
    "group_by": "--group-by",
    "model": "--estimator/--param",
    "model.estimator": "--estimator",
    "model.params": "--param",
}


def _table() -> dict[str, Place]:
    table = {key: Place(manifest=f"spec.{key}") for key in _spec_keys(RunSpec)}
    table["name"] = Place(manifest="metadata.name")
    table.update({key: Place() for key in _ARGUMENTS})
    for key, flag in _CROSSVAL.items():
        table[key] = table.get(key, Place())._replace(crossval=flag)
    for key, flag in _TRAIN.items():
        table[key] = table.get(key, Place())._replace(train=flag)
    return table


FIELDS: dict[str, Place] = _table()
"""Domain key (list indices left out) -> where the user sets it."""


def domain_key(field: str) -> str:
    """``field`` without list indices: ``sensors[0].catalog.url`` -> ``sensors.catalog.url``."""
    return re.sub(r"\[\d+\]", "", field)


def place_of(field: str, *, command: Command = "run", flags: Collection[str] | None = None) -> str:
    """The field as the user of ``command`` knows it (unchanged when it is not a domain key).

    ``flags`` are the options the user gave (None: every option of the command): a key whose
    option was not given came from the manifest.
    """
    original = field
    field = field.removeprefix("spec.")  # a manifest path given by a caller not yet moved
    place = FIELDS.get(domain_key(field))
    if place is None:
        return original
    flag = place.crossval if command == "crossval" else place.train if command == "train" else None
    if flag is not None and (flags is None or any(f in flags for f in flag.split("/"))):
        return flag
    if place.manifest is not None and command in _READ_MANIFEST:
        return f"spec.{field}" if place.manifest.startswith("spec.") else place.manifest
    return original


def locate(
    error: SitsflowError, *, command: Command = "run", flags: Collection[str] | None = None
) -> SitsflowError:
    """``error`` with its field (and the keys its fix names) as the user of ``command`` knows
    them; the same error when nothing changes."""
    if not error.field:
        return error
    field = place_of(error.field, command=command, flags=flags)
    fix = error.fix
    if fix and command != "run":
        # Fixes written for the manifest name keys; a table command's user sets options.
        for key in sorted(FIELDS, key=len, reverse=True):
            if "." not in key:
                continue
            flag = place_of(key, command=command, flags=flags)
            if flag.startswith("--"):
                fix = fix.replace(f"spec.{key}", flag).replace(key, flag)
    if field == error.field and fix == error.fix:
        return error
    located = type(error).__new__(type(error))
    located.__dict__.update(error.__dict__)
    located.field, located.fix = field, fix
    located.args = (located.render(),)
    return located
