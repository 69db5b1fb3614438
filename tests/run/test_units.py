"""Unit identity (content hashes) and the ledger, on a local folder and on S3 (moto)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as hst

from pipeline.model import GridSpec, Window
from pipeline.run.units import Ledger, Record, Unit, canonical, content_hash, window_key
from pipeline.storage import RunStore
from tests.servers.s3 import moto_s3_server

scalars = hst.one_of(
    hst.none(),
    hst.booleans(),
    hst.integers(-(2**60), 2**60),
    hst.floats(allow_nan=False),
    hst.text(max_size=8),
)
values = hst.recursive(
    scalars,
    lambda inner: hst.one_of(
        hst.lists(inner, max_size=4), hst.dictionaries(hst.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(hst.dictionaries(hst.text(max_size=6), values, max_size=6), hst.randoms())
def test_dict_order_does_not_change_the_digest(mapping: dict[str, Any], rng: Any) -> None:
    items = list(mapping.items())
    rng.shuffle(items)
    assert content_hash(dict(items)) == content_hash(mapping)


@given(values, values)
def test_different_values_give_different_digests(a: Any, b: Any) -> None:
    if canonical(a) != canonical(b):
        assert content_hash(a) != content_hash(b)


def test_equal_meaning_equal_digest() -> None:
    assert content_hash((1, 2.5, "x")) == content_hash([1, 2.5, "x"])
    assert content_hash(np.int64(3), np.float32(0.5)) == content_hash(3, 0.5)
    assert content_hash({1, 2, 3}) == content_hash(frozenset({3, 2, 1}))
    assert content_hash(np.arange(6).reshape(2, 3)) == content_hash(np.arange(6).reshape(2, 3))
    assert content_hash(np.arange(6).reshape(2, 3)) != content_hash(np.arange(6).reshape(3, 2))
    assert content_hash(np.arange(6, dtype="int32")) != content_hash(np.arange(6, dtype="int64"))
    assert content_hash(float("nan")) == content_hash(float("nan"))
    assert content_hash(0.1) != content_hash(0.1 + 1e-17 * 10)
    assert content_hash(date(2017, 1, 1)) != content_hash("2017-01-01")
    assert content_hash(datetime(2017, 1, 1, tzinfo=UTC)) != content_hash(date(2017, 1, 1))


def test_dataclasses_hash_by_their_compared_fields() -> None:
    grid = GridSpec("EPSG:32633", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), 100, 101)
    assert content_hash(grid) == content_hash(dataclasses.replace(grid))
    assert content_hash(grid) != content_hash(dataclasses.replace(grid, width=99))

    @dataclasses.dataclass(frozen=True)
    class Task:
        window: Window
        options: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    # Fields left out of equality (options, caches) are not part of the identity.
    assert content_hash(Task(Window(0, 0, 4, 4), {"a": 1})) == content_hash(
        Task(Window(0, 0, 4, 4), {"b": 2})
    )
    assert content_hash(Task(Window(0, 0, 4, 4))) != content_hash(Task(Window(0, 4, 4, 4)))


def test_frames_hash_by_content() -> None:
    frame = pd.DataFrame({"row": [1, 2], "split": ["train", "validation"]})
    assert content_hash(frame) == content_hash(frame.copy())
    changed = frame.copy()
    changed.loc[1, "split"] = "train"
    assert content_hash(frame) != content_hash(changed)


def test_unknown_types_are_refused_not_hashed_by_repr() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match="cannot hash"):
        content_hash(Opaque())


def test_unit_keys_and_digests_are_checked() -> None:
    good = content_hash("x")
    Unit("cube", window_key(Window(32, 64, 32, 32)), good)
    assert window_key(Window(32, 64, 32, 32)) == "r000032-c000064"
    for key in ("", "a/b", "a@b", "../x", " x"):
        with pytest.raises(ValueError, match="unit key"):
            Unit("cube", key, good)
    with pytest.raises(ValueError, match="digest"):
        Unit("cube", "k", "not-a-digest")


@pytest.fixture(scope="module")
def s3_root() -> Iterator[str]:
    with moto_s3_server() as s3, pytest.MonkeyPatch.context() as env:
        for key, value in s3.env.items():
            env.setenv(key, value)
        boto3.client("s3", endpoint_url=s3.endpoint_url).create_bucket(Bucket="ledger-tests")
        yield "s3://ledger-tests/runs"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RunStore:
    if request.param == "local":
        return RunStore(tmp_path / "store")
    root = request.getfixturevalue("s3_root")
    return RunStore(f"{root}/{tmp_path.name}")


def _record(unit: Unit, session: str = "s1") -> Record:
    return Record(unit.stage, unit.key, unit.digest, session, "w", 0.1, "t", {"n": 1})


def test_the_ledger_skips_finished_units_and_forgets_stale_ones(store: RunStore) -> None:
    ledger = Ledger(store)
    units = [Unit("cube", f"k{i}", content_hash("cube", i)) for i in range(5)]
    assert ledger.is_empty()
    assert ledger.split(units) == ([], units)
    for unit in units[:3]:
        ledger.write(_record(unit))
    done, todo = ledger.split(units)
    assert done == units[:3] and todo == units[3:]
    assert ledger.read_many(done)["k1"].summary == {"n": 1}
    assert not ledger.is_empty() and ledger.stages() == ["cube"]

    # A changed parameter: the same keys with new digests are to run; their old records go.
    changed = [dataclasses.replace(u, digest=content_hash("cube", "v2", i)) for i, u in
               enumerate(units)]  # fmt: skip
    done, todo = ledger.split(changed)
    assert done == [] and todo == changed
    assert ledger.forget_stale(changed) == 3
    assert ledger.finished("cube") == {}
    ledger.write(_record(changed[0], "s2"))
    assert ledger.split(changed)[0] == [changed[0]]
    ledger.clear("cube")
    assert ledger.is_empty()


def test_ledger_reads_what_another_process_wrote(store: RunStore) -> None:
    unit = Unit("predict", "r000000-c000000", content_hash("p"))
    assert Ledger(store).split([unit])[0] == []  # listed (and cached) before the write
    Ledger(RunStore(store.root)).write(_record(unit))
    assert Ledger(store).split([unit])[0] == [unit]
