"""An S3 API server for tests: moto's server on 127.0.0.1, as a separate process."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers._process import free_port, port_open, running

ACCESS_KEY = "sitsflow-test-key"
SECRET_KEY = "sitsflow-test-secret"  # a test server's throw-away credential
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    port: int

    @property
    def env(self) -> dict[str, str]:
        """Environment for boto3/s3fs and for GDAL's /vsis3/ to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_S3_ENDPOINT": f"127.0.0.1:{self.port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        }

    @property
    def storage_options(self) -> dict[str, object]:
        """fsspec/s3fs options for this server."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        }


@contextlib.contextmanager
def moto_s3_server(log: Path | None = None) -> Iterator[S3Server]:
    """A fresh, empty S3 server, stopped (by PID) when the block ends."""
    port = free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    with running([exe, "-H", "127.0.0.1", "-p", str(port)], lambda: port_open(port),
                 name="moto S3 server", log=log):  # fmt: skip
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}", port=port)


@contextlib.contextmanager
def s3_bucket_in_environment(bucket: str) -> Iterator[S3Server]:
    """A fresh S3 server holding an empty ``bucket``, its settings in ``os.environ`` (what a worker
    pod gets from its environment: GDAL's /vsis3/, s3fs and boto3 read them) for the duration of
    the block, then restored."""
    import boto3

    with moto_s3_server() as server:
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        try:
            boto3.client("s3", endpoint_url=server.endpoint_url).create_bucket(Bucket=bucket)
            yield server
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
