"""The run store on a local folder and on S3 (moto): atomic writes, listings, folders, checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pipeline.errors import OutputError
from pipeline.storage import RunStore, check_writable
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, moto_s3_server

BUCKET = "store-tests"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3_server() as server, pytest.MonkeyPatch.context() as env:
        for key, value in server.env.items():
            env.setenv(key, value)
        boto3.client("s3", endpoint_url=server.endpoint_url).create_bucket(Bucket=BUCKET)
        yield server.endpoint_url


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RunStore:
    if request.param == "local":
        return RunStore(tmp_path / "store")
    request.getfixturevalue("s3")
    return RunStore(f"s3://{BUCKET}/{tmp_path.name}/")


def test_objects_round_trip_and_list(store: RunStore) -> None:
    assert store.list_names("state/ledger/cube") == []
    store.write_text("state/ledger/cube/a@1.json", "{}")
    store.write_bytes("state/ledger/cube/b@2.json", b"[]")
    assert store.read_text("state/ledger/cube/a@1.json") == "{}"
    assert store.list_names("state/ledger/cube") == ["a@1.json", "b@2.json"]
    assert store.exists("state/ledger/cube/b@2.json")
    store.remove("state/ledger/cube/a@1.json")
    assert store.list_names("state/ledger/cube") == ["b@2.json"]
    store.remove("state")
    assert not store.exists("state/ledger/cube/b@2.json")
    store.remove("state")  # absent: nothing happens


def test_a_published_folder_replaces_the_old_one_whole(store: RunStore, tmp_path: Path) -> None:
    with store.publish("model") as folder:
        folder.mkdir()
        (folder / "model.json").write_text("old")
        (folder / "stale.bin").write_bytes(b"x")
    with store.publish("model") as folder:
        folder.mkdir()
        (folder / "model.json").write_text("new")
        (folder / "weights").mkdir()
        (folder / "weights" / "w.bin").write_bytes(b"123")
    local = tmp_path / "copy"
    store.download("model", local)
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "model.json",
        "weights/w.bin",
    ]
    assert (local / "model.json").read_text() == "new"


def test_a_failed_publish_leaves_the_old_output(store: RunStore) -> None:
    store.write_text("maps/labels.tif", "previous")
    with pytest.raises(RuntimeError), store.publish("maps/labels.tif") as path:
        path.write_text("half")
        raise RuntimeError("the writer died")
    assert store.read_text("maps/labels.tif") == "previous"
    with store.fetch("maps/labels.tif") as local:
        assert local.read_text() == "previous"


def test_names_never_leave_the_store(store: RunStore) -> None:
    for bad in ("../x", "/etc/passwd", "a/../../b", "a\\b"):
        with pytest.raises(ValueError, match="inside the run store"):
            store.url(bad)
    with pytest.raises(ValueError):
        store.remove("")


def test_local_temporaries_are_not_listed(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / ".x.json.tmp-1234").write_text("")
    (tmp_path / "state" / "x.json").write_text("")
    assert store.list_names("state") == ["x.json"]


def test_a_store_pickles_to_its_root_only(store: RunStore) -> None:
    import pickle

    store.exists("x")  # creates the file system object of a remote store
    again = pickle.loads(pickle.dumps(store))
    assert again == store and again._fs is None


def test_writable_bucket_passes_and_leaves_nothing(s3: str) -> None:
    check_writable(f"s3://{BUCKET}/runs/new")
    listed = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket=BUCKET, Prefix="runs/")
    assert listed.get("KeyCount", 0) == 0


def test_missing_bucket_is_refused_without_secrets(s3: str) -> None:
    with pytest.raises(OutputError) as caught:
        check_writable("s3://no-such-bucket-here/runs/x")
    message = str(caught.value)
    assert "outputs.store" in message and "no-such-bucket-here" in message
    assert "Fix:" in message
    assert SECRET_KEY not in message and ACCESS_KEY not in message
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message
