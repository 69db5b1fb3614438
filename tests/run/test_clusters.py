"""Clusters: the Kubernetes DaskCluster spec (pure), the settings shipped to workers, a real
existing scheduler reached by address, and the LocalCluster a run starts (its workers' malloc
settings, quick exit and warm-up)."""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline.errors import ComputeError
from pipeline.run import clusters, forkserver
from pipeline.run.clusters import (
    COMPILED,
    SKOPS,
    ClusterStarter,
    QuickExit,
    kubernetes_cluster_spec,
    open_client,
    stage_modules,
)
from pipeline.run.config import AdaptiveConfig, ComputeConfig, KubernetesConfig
from pipeline.run.dask_spec import SCRATCH_ENV, WORKER_POD_ENV, k8s_quantity, worker_environment
from tests.servers._process import free_port
from tests.servers.dask_cluster import dask_cluster


def kube_compute(**kubernetes: Any) -> ComputeConfig:
    return ComputeConfig(
        cluster="kubernetes",
        workers=6,
        threads_per_worker=2,
        memory_limit="6GiB",
        adaptive=AdaptiveConfig(minimum=2, maximum=20),
        kubernetes=KubernetesConfig(image="ghcr.io/example/sitsflow:0.1.0", **kubernetes),
    )


def containers(spec: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return list(spec["spec"][role]["spec"]["containers"])


def test_the_dask_cluster_spec_follows_the_compute_section() -> None:
    compute = kube_compute(
        namespace="mapping",
        credentials_secret="s3-credentials",
        service_account="sitsflow-runner",
        scheduler_memory="3GiB",
    )
    env = {"AWS_REGION": "eu-west-1", "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    spec = kubernetes_cluster_spec(compute, "france-2024", env)
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    assert spec["metadata"]["name"] == "sitsflow-france-2024"
    assert spec["metadata"]["namespace"] == "mapping"
    assert spec["metadata"]["labels"]["app.kubernetes.io/instance"] == "france-2024"
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 6
    (container,) = containers(spec, "worker")
    assert container["image"] == "ghcr.io/example/sitsflow:0.1.0"
    args = container["args"]
    assert args[args.index("--nthreads") + 1] == "2"
    assert args[args.index("--memory-limit") + 1] == "6GiB"
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "6Gi"},
        "limits": {"memory": "6Gi"},
    }
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    # The operator's pods have the same: scratch settings (a read-only root), then the shipped ones.
    assert {e["name"]: e["value"] for e in container["env"]} == {
        **SCRATCH_ENV,
        **env,
        **WORKER_POD_ENV,
    }
    assert worker["spec"]["serviceAccountName"] == "sitsflow-runner"
    (scheduler,) = containers(spec, "scheduler")
    assert {e["name"]: e["value"] for e in scheduler["env"]} == {**SCRATCH_ENV, **env}
    assert scheduler["resources"]["limits"] == {"memory": "3Gi"}
    assert scheduler["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    # A manifest the API server accepts: plain YAML-serializable data.
    assert yaml.safe_load(yaml.safe_dump(spec)) == spec


def test_the_spec_carries_no_credential() -> None:
    secret_env = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY123",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value-123",
        "AWS_SESSION_TOKEN": "token-value-123",
        "GDAL_HTTP_USERPWD": "user:password-123",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "https://s3.example.org",
    }
    shipped = worker_environment(secret_env)
    assert shipped["AWS_REGION"] == "eu-west-1"
    assert shipped["AWS_ENDPOINT_URL"] == "https://s3.example.org"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "GDAL_HTTP_USERPWD"):  # fmt: skip
        assert name not in shipped
    text = yaml.safe_dump(kubernetes_cluster_spec(kube_compute(), "run", shipped))
    for value in ("AKIAEXAMPLEKEY123", "s3cr3t-value-123", "token-value-123", "password-123"):
        assert value not in text


def test_kubernetes_quantities() -> None:
    assert k8s_quantity("4GiB") == "4Gi"
    assert k8s_quantity("1.5 GiB") == "1536Mi"
    assert k8s_quantity("2GB") == "2G"
    assert k8s_quantity("300MB") == "300M"


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    compute = ComputeConfig(
        cluster="address", address=f"tcp://127.0.0.1:{free_port()}", connect_timeout_s=2
    )
    with pytest.raises(ComputeError) as caught, open_client(compute):
        pass
    message = str(caught.value)
    assert "compute.address" in message and "Fix:" in message


def test_an_existing_scheduler_gets_the_worker_settings(tmp_path: Any) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("GDAL_HTTP_MAX_RETRY", raising=False)
        with dask_cluster(n_workers=1, log_dir=tmp_path) as cluster:
            env.setenv("AWS_REGION", "eu-central-1")  # set in the driver only
            compute = ComputeConfig(cluster="address", address=cluster.address)
            starter = ClusterStarter(compute, "test", ["predict"])
            try:
                client = starter.client()
                seen = client.run(os.getenv, "AWS_REGION")
                assert list(seen.values()) == ["eu-central-1"]
                assert list(client.run(os.getenv, "GDAL_HTTP_MAX_RETRY").values()) == ["5"]
            finally:
                starter.close()


def _malloc_settings() -> tuple[str | None, bool]:
    """MALLOC_TRIM_THRESHOLD_ as the worker sees it, and whether its process started with it
    (glibc reads the variable once, at process start: /proc/self/environ is what it read)."""
    environ = Path("/proc/self/environ").read_bytes().split(b"\0")
    at_start = any(entry.startswith(b"MALLOC_TRIM_THRESHOLD_=") for entry in environ)
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), at_start


def _plugins(dask_worker: Any) -> list[str]:
    return sorted(dask_worker.plugins)


def test_the_runs_local_cluster_spawns_workers_without_the_nannys_malloc_trim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dask.config

    # dask's own default, which a LocalCluster started elsewhere in this process would use.
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") == 65536
    # A nanny copies its spawn environment into this process: start from a clean one, as the
    # sitsflow command does.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    compute = ComputeConfig(workers=1, dashboard_port=0, memory_limit="1GiB")
    starter = ClusterStarter(compute, "test", ["predict"])
    try:
        client = starter.client()
        assert list(client.run(_malloc_settings).values()) == [(None, False)]
        (plugins,) = client.run(_plugins).values()
        assert {"sitsflow-environment", "sitsflow-quick-exit"} <= set(plugins)
        # The warm-up imported the predict units' modules on the worker.
        futures = list(starter._warm_up)
        assert [f.result(timeout=120) for f in futures] == [list(starter.modules)]
        assert SKOPS in starter.modules and "pipeline.predict.blockwise" in starter.modules
    finally:
        starter.close()
    # Only while the run's cluster lives: dask's default is back for anything else.
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") == 65536


def _loaded_at_start(module: str) -> tuple[bool, str | None, int]:
    """In a worker: whether ``module`` is imported, OMP_NUM_THREADS as the process started with
    it (/proc/self/environ), and the parent process."""
    import sys

    environ = Path("/proc/self/environ").read_bytes().split(b"\0")
    omp = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"OMP_NUM_")), None)
    return module in sys.modules, omp, os.getppid()


def test_a_preloaded_cluster_forks_its_workers_with_the_stages_modules_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    module = "pipeline.postprocess.vectorize"  # imported by no test module, nor by the warm-up
    compute = ComputeConfig(workers=2, dashboard_port=0, memory_limit="1GiB")
    with open_client(compute, preload=[module]) as client:
        server = forkserver.pid()
        seen = list(client.run(_loaded_at_start, module).values())
        assert server and seen == [(True, "1", server)] * 2  # forked from it, env of the nanny
        # numpy imported in the server with the spawn environment: no huge-page requests.
        assert set(client.run(np._core.multiarray._get_madvise_hugepage).values()) == {False}
    assert forkserver.pid() is None  # the server lives as long as the cluster
    # Spawned (no preload): a worker starts bare, and its parent is the driver (the nanny).
    with open_client(dataclasses.replace(compute, workers=1)) as client:
        ((loaded, omp, parent),) = client.run(_loaded_at_start, module).values()
        assert (loaded, omp, parent) == (False, "1", os.getpid())
        assert set(client.run(np._core.multiarray._get_madvise_hugepage).values()) == {False}


def _kernels_and_torch() -> tuple[bool, bool]:
    """In a worker: whether the cube kernels were compiled or loaded already (numba dispatchers
    hold their signatures), and whether torch is imported."""
    import sys

    kernels = sys.modules["pipeline.cube.build"]._apply_table.signatures
    return bool(kernels), "torch" in sys.modules


def test_a_prestarted_fork_server_serves_the_cluster_that_needs_no_more() -> None:
    """``sitsflow run`` starts the fork server before planning; the cluster started later forks
    its workers from it (modules and kernels loaded, no torch in a scikit-learn run), unless it
    needs a module the server did not preload."""
    compute = ComputeConfig(workers=1, dashboard_port=0, memory_limit="1GiB")
    forkserver.prestart("sklearn")
    try:
        server = forkserver.pid()
        assert server is not None
        with open_client(compute, preload=stage_modules(["samples", "predict"])) as client:
            assert forkserver.pid() == server
            seen = client.run(_loaded_at_start, "pipeline.stages.predict")
            ((loaded, _, parent),) = seen.values()
            assert loaded and parent == server
            assert list(client.run(_kernels_and_torch).values()) == [(True, False)]
        assert forkserver.pid() is None  # stopped with its cluster
        forkserver.prestart("sklearn")
        first = forkserver.pid()
        with open_client(compute, preload=["pipeline.postprocess.vectorize", "json"]):
            assert forkserver.pid() not in (None, first)  # "json" was not preloaded
    finally:
        forkserver.stop()


def test_the_starter_reports_when_its_workers_are_ready() -> None:
    compute = ComputeConfig(workers=1, dashboard_port=0, memory_limit="1GiB")
    starter = ClusterStarter(compute, "test", ["mosaic"], preload=True)
    try:
        warm = starter.ready(timeout=300)
        assert warm.workers == 1 and warm.finished
        assert warm.seconds >= warm.waited >= 0
        assert [f.result() for f in starter._warm_up] == [list(starter.modules)]
    finally:
        starter.close()


@pytest.mark.parametrize("when", ["while starting", "once up"])
def test_a_cluster_started_before_planning_warms_up_the_stages_it_is_told_later(
    when: str,
) -> None:
    """``sitsflow run`` starts a local cluster before planning knows the stages left; planning
    tells it (``warm_up``) before or after its workers are up: they import those stages' modules
    once, and a second call changes nothing."""
    compute = ComputeConfig(workers=1, dashboard_port=0, memory_limit="1GiB")
    starter = ClusterStarter(compute, "test", preload=True)
    try:
        assert starter.modules == ()
        if when == "once up":
            starter.client()
        starter.warm_up(["mosaic"])
        starter.warm_up(["predict"])  # the warm-up is submitted once
        warm = starter.ready(timeout=300)
        assert warm.workers == 1 and warm.finished
        assert starter.modules == stage_modules(["mosaic"])
        assert [f.result() for f in starter._warm_up] == [list(stage_modules(["mosaic"]))]
    finally:
        starter.close()


def test_a_closing_worker_freezes_its_heap() -> None:
    gc.unfreeze()
    try:
        QuickExit().teardown(None)
        assert gc.get_freeze_count() > 0  # the final collections at exit skip these objects
    finally:
        gc.unfreeze()


def test_the_warm_up_follows_the_stages_and_the_model() -> None:
    kernels = "pipeline.cube.build:load_kernels"
    assert stage_modules(["cube", "samples"]) == (
        "pipeline.stages.cube",
        kernels,
        "pipeline.stages.samples",
    )
    predict = stage_modules(["predict", "validate"])
    assert predict[0] == "pipeline.stages.predict" and len(set(predict)) == len(predict)
    assert SKOPS in predict and COMPILED in predict
    # The validate stage's one unit runs on the driver: its report (matplotlib) is not preloaded.
    assert "pipeline.validate.report" not in predict
    torch = stage_modules(["train", "predict", "validate"], model_kind="torch")
    assert SKOPS not in torch and COMPILED not in torch
    assert stage_modules(["discover"]) == ("pipeline.stages.discover",)
    # What the warm-up names is importable (a module:function is called).
    assert clusters.import_modules(stage_modules(["cube", "mosaic"])) == list(
        stage_modules(["cube", "mosaic"])
    )


@pytest.mark.parametrize("in_pod_env", [False, True])
def test_a_pod_worker_starts_without_the_nanny_malloc_setting(
    in_pod_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dask worker`` as the pods run it, with and without the worker container's env: the
    nanny's MALLOC_TRIM_THRESHOLD_ goes, numpy's huge-page requests are off, the nanny's other
    settings stay."""
    from distributed import Client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)  # a local cluster's nanny left it
    if in_pod_env:
        for name, value in WORKER_POD_ENV.items():
            monkeypatch.setenv(name, value)
    with dask_cluster(n_workers=1) as cluster, Client(cluster.address, timeout=60) as client:
        client.wait_for_workers(1, timeout=60)
        # os.getenv travels by reference: it runs in the worker (a test function would not).
        seen = {
            name: next(iter(client.run(functools.partial(os.getenv, name)).values()))
            for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")
        }
        (madvise,) = client.run(np._core.multiarray._get_madvise_hugepage).values()
    assert seen["OMP_NUM_THREADS"] == "1"
    assert seen["MALLOC_TRIM_THRESHOLD_"] == (None if in_pod_env else "65536")
    assert madvise is not in_pod_env


def test_the_driver_imports_its_units_modules_in_the_background() -> None:
    """What the driver's own units (the STAC catalog, the report) import is named by their
    stages and loaded in a thread while the workers compute; a module that fails to import is
    left to the unit, which reports it."""
    import sys

    assert clusters.driver_modules(["predict", "mosaic", "validate"]) == (
        "pipeline.predict.stac",
        "pipeline.validate.mapped_area",
        "pipeline.validate.report",
    )
    sys.modules.pop("json.tool", None)
    thread = clusters.import_in_background(["no_such_module_here", "json.tool"])
    thread.join(timeout=60)
    assert not thread.is_alive() and "json.tool" in sys.modules
