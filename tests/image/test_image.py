"""The image, built and run here: `deploy/image.sh build` builds deploy/Dockerfile with buildah
(vfs, chroot isolation) on a Debian 12 base made with debootstrap, from a wheelhouse, offline (the
base and the wheelhouse come from `deploy/image.sh prepare`, which `scripts/bootstrap.sh --dev`
runs); then, inside the image (`buildah run`): `sitsflow --help`, and the demo manifest end to end
against an S3 server as its store, attached to a dask scheduler and two workers started from the
image's own binaries.

Part of `make test` and CI. The build starts in the background as soon as the tests are collected
(tests/image/build.py) and these tests run last, so the build overlaps the rest of the suite. Give
an image already built to skip the build: ``SITSFLOW_IMAGE=localhost/sitsflow:dev pytest
tests/image``. Needs root and buildah; without them it skips on a developer's machine and fails in
CI (tests/k8s/tools.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.image.build import ENV, LOG, STATS, TAG, start, wait
from tests.k8s.tools import missing
from tests.servers._process import free_port, port_open
from tests.servers.s3 import moto_s3_server

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = "/usr/local/bin/sitsflow-entrypoint"  # after tini in the image's ENTRYPOINT
BUCKET = "sitsflow-runs"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
# sha256 of the demo's maps as `sitsflow demo` writes them on a workstation (byte-identical
# whatever runs them), and its accuracy (metrics.json itself holds the stage timings).
DEMO_DIGESTS = {
    "maps/labels.tif": "a10ffb2aebfdc5f9baabf1948aa696de1490bc79aa98e6cedaea17cd01dcff1a",
    "maps/confidence.tif": "a3199aff88375ce13880f4f6930fa60ecf2e0c9d3b2665a9bfd65e4458a4fdc4",
}
DEMO_ACCURACY = {"n_samples": 4591, "overall_accuracy": 0.876715312568068}
WORKER_OPTIONS = (
    "--host",
    "127.0.0.1",
    "--nthreads",
    "1",
    "--memory-limit",
    "2GiB",
    "--no-dashboard",
    "--name",
)


def buildah(*args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        ["buildah", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **ENV},
    )
    assert result.returncode == 0, f"buildah {args[0]}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The image: SITSFLOW_IMAGE when given, else the one this session built (tests/image/build.py);
    its size and build times."""
    given = os.environ.get("SITSFLOW_IMAGE")
    if shutil.which("buildah") is None:
        missing("buildah is absent: the image cannot be run (apt-get install buildah)")
    if os.geteuid() != 0:
        missing("buildah with vfs needs root here")
    if given:
        buildah("inspect", "--type", "image", given)
        return {"tag": given}
    build = wait(request.config)
    if build is None:  # selected after collection (e.g. --lf): build now, in the foreground
        start(request.config, [request.node])
        build = wait(request.config)
    assert build is not None
    if build.process is None:
        missing(build.why_not)
    assert build.process is not None
    assert build.process.returncode == 0, f"the image build failed: {LOG.read_text()[-4000:]}"
    return {"tag": TAG, **json.loads(STATS.read_text())}


@pytest.fixture(scope="module")
def container(image: dict[str, Any]) -> Iterator[str]:
    name = buildah("from", image["tag"], timeout=900).strip()
    try:
        yield name
    finally:
        buildah("rm", name)


def run_in(container: str, *command: str, env: dict[str, str] | None = None) -> list[str]:
    """The `buildah run` command line of ``command`` inside ``container``, with ``env``, through
    the image's entrypoint as a pod runs it (`buildah run` itself skips the entrypoint)."""
    args = ["buildah", "run"]
    for key, value in (env or {}).items():
        args += ["--env", f"{key}={value}"]
    return [*args, container, "--", ENTRYPOINT, *command]


@contextlib.contextmanager
def started(command: Sequence[str], log: Path, ready: Any, what: str) -> Iterator[None]:
    """A process of the image, in its own session (stopped with its children, by its id)."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENV},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not ready():
                assert process.poll() is None, f"{what} stopped: {log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"{what} not up in 120 s: {log.read_text()}"
                time.sleep(0.5)
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def test_the_image_is_built_and_sitsflow_runs_in_it(image: dict[str, Any], container: str) -> None:
    print(f"image {image}")  # size and build times, for docs/kubernetes.md
    result = subprocess.run(
        run_in(container, "sitsflow", "--help"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **ENV},
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "run" in result.stdout
    user = subprocess.run(
        run_in(container, "id", "-u"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
    )
    assert user.stdout.strip() == "10001"  # the unprivileged user the chart's pods run as


def test_the_demo_runs_in_the_image_on_s3_with_the_images_dask_cluster(
    container: str, tmp_path: Path
) -> None:
    import boto3

    with moto_s3_server(log=tmp_path / "s3.log") as s3:
        boto3.client("s3", endpoint_url=s3.endpoint_url, **_keys(s3.env)).create_bucket(
            Bucket=BUCKET
        )
        env = {**s3.env, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        scheduler = run_in(
            container,
            "dask",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            f"127.0.0.1:{free_port()}",
            env=env,
        )
        logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
        workers = [
            run_in(
                container,
                "dask",
                "worker",
                address,
                *WORKER_OPTIONS,
                f"image-worker-{i}",
                "--local-directory",
                f"/tmp/dask-worker-{i}",
                env=env,
            )
            for i in range(2)
        ]

        def registered(log: Path) -> bool:
            return "Starting established connection" in log.read_text()

        # The demo manifest a first Kubernetes run applies (paths inside the image), with the
        # S3 server as its store and the image's own scheduler as its cluster.
        manifest = yaml.safe_load((REPO / "deploy" / "examples" / "demo-run.yaml").read_text())
        manifest["spec"]["outputs"]["store"] = f"s3://{BUCKET}/slovenia-demo"
        manifest["spec"]["compute"] = {
            "cluster": "address",
            "address": address,
            "chunk_size": manifest["spec"]["compute"]["chunk_size"],
            "connect_timeout_s": 120,
        }
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        buildah("copy", "--chmod", "0644", container, str(tmp_path / "run.yaml"), "/tmp/run.yaml")

        with (
            started(scheduler, tmp_path / "scheduler.log", lambda: port_open(port), "scheduler"),
            started(workers[0], logs[0], lambda: registered(logs[0]), "worker 0"),
            started(workers[1], logs[1], lambda: registered(logs[1]), "worker 1"),
        ):
            driver = subprocess.run(
                run_in(container, "sitsflow", "run", "/tmp/run.yaml", env=env),
                capture_output=True,
                text=True,
                timeout=900,
                env={**os.environ, **ENV},
            )
            scheduler_log = (tmp_path / "scheduler.log").read_text()
        assert driver.returncode == 0, driver.stdout[-4000:] + driver.stderr[-4000:]
        # Both workers joined the image's scheduler and ran the run's units.
        assert scheduler_log.count("Register worker") >= 2, scheduler_log[-3000:]
        for log in logs:
            assert "Starting established connection" in log.read_text()
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, **_keys(s3.env))
        for output, expected in DEMO_DIGESTS.items():
            body = client.get_object(Bucket=BUCKET, Key=f"slovenia-demo/{output}")["Body"].read()
            # The same bytes as `sitsflow demo` on a workstation: image, S3 and cluster included.
            assert hashlib.sha256(body).hexdigest() == expected, output
        # The workers loaded the kernels compiled into the image (seeded into /tmp/numba by the
        # entrypoint): numba wrote no new cache file after the seed.
        seeded = subprocess.run(
            run_in(
                container,
                "sh",
                "-c",
                "find /tmp/numba -newer /tmp/numba/.seeded -name '*.nbc' | wc -l; "
                "ls /tmp/numba | wc -l",
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **ENV},
        )
        new_files, entries = (int(n) for n in seeded.stdout.split())
        assert entries > 0 and new_files == 0, seeded.stdout + seeded.stderr
        report = client.get_object(Bucket=BUCKET, Key="slovenia-demo/report/metrics.json")
        metrics = json.loads(report["Body"].read())
        assert {k: metrics[k] for k in DEMO_ACCURACY} == DEMO_ACCURACY


def _keys(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_REGION"],
    }
