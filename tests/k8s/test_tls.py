"""A closed scheduler: the run's certificates, its TLS settings as the pods get them, a REAL
`dask scheduler` and `dask worker` started with those settings on 127.0.0.1, and the
NetworkPolicies that admit only the run's own pods."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from distributed import Client
from distributed.security import Security

from pipeline.k8s.config import NetworkPolicySettings, OperatorConfig
from pipeline.k8s.network import build_network_policies
from pipeline.k8s.specs import (
    RunRef,
    build_config_map,
    build_dask_cluster,
    build_driver_job,
    build_tls_secret,
)
from pipeline.k8s.tls import make_certificates
from pipeline.manifest import parse_manifest
from pipeline.run.dask_spec import TLS_DIR

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"
REF = RunRef(name="slovenia-demo", namespace="runs", uid="9f1c2d3e-0000-4000-8000-000000000002")
CONFIG = OperatorConfig(image="registry.example.org/sitsflow:1.2.3")
BIN = Path(sys.executable).parent


def run_manifest() -> Any:
    text = (REPO / "deploy" / "examples" / "demo-run.yaml").read_text()
    return parse_manifest(text, base_dir=Path("/"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_of(container: dict[str, Any], tls_dir: Path) -> dict[str, str]:
    """The container's plain environment, with the Secret's mount moved to ``tls_dir``."""
    return {
        e["name"]: e["value"].replace(TLS_DIR, str(tls_dir))
        for e in container["env"]
        if "value" in e and e["name"].startswith("DASK_")
    }


def write(files: dict[str, str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def cluster_spec() -> dict[str, Any]:
    return build_dask_cluster(REF, run_manifest(), CONFIG)


@contextlib.contextmanager
def start_scheduler(container: dict[str, Any], tls_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A rendered scheduler container's command and TLS settings, run on 127.0.0.1 with the
    certificates in ``tls_dir`` (where the pod mounts the Secret); its address."""
    args = list(container["args"])
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[args.index("--dashboard-address") + 1] = f"127.0.0.1:{free_port()}"
    env = {**os.environ, **env_of(container, tls_dir), "DASK_TEMPORARY_DIRECTORY": str(tmp_path)}
    log_path = tmp_path / "scheduler.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [str(BIN / args[0]), *args[1:]], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while "Scheduler at:" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the scheduler did not start in 30 s"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture
def scheduler(cluster_spec: dict[str, Any], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The operator's rendered scheduler, run on 127.0.0.1 with a run's certificates."""
    tls_dir = write(make_certificates("runs/slovenia-demo").files(), tmp_path / "tls")
    (container,) = cluster_spec["spec"]["scheduler"]["spec"]["containers"]
    with start_scheduler(container, tls_dir, tmp_path) as address:
        yield address, tls_dir


def security(tls_dir: Path) -> Security:
    return Security(
        tls_ca_file=str(tls_dir / "ca.crt"),
        tls_client_cert=str(tls_dir / "tls.crt"),
        tls_client_key=str(tls_dir / "tls.key"),
        require_encryption=True,
    )


def test_the_scheduler_listens_on_tls_only(cluster_spec: dict[str, Any]) -> None:
    (scheduler,) = cluster_spec["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][scheduler["args"].index("--protocol") + 1] == "tls"
    env = {e["name"]: e["value"] for e in scheduler["env"]}
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == f"{TLS_DIR}/ca.crt"
    (worker,) = cluster_spec["spec"]["worker"]["spec"]["containers"]
    # dask-kubernetes hands workers a tcp:// address; the command's own tls:// one wins.
    assert worker["args"][2] == "tls://slovenia-demo-dask-scheduler.runs.svc:8786"
    for role in ("scheduler", "worker"):
        pod = cluster_spec["spec"][role]["spec"]
        secret = {"secretName": REF.tls_secret, "defaultMode": 0o440}
        assert {"name": "dask-tls", "secret": secret} in pod["volumes"]
        mounts = pod["containers"][0]["volumeMounts"]
        assert {"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True} in mounts
    job = build_driver_job(REF, CONFIG)
    (driver,) = job["spec"]["template"]["spec"]["containers"]
    assert env_of(driver, Path(TLS_DIR))["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == (
        f"{TLS_DIR}/tls.crt"
    )
    manifest = yaml.safe_load(build_config_map(REF, {}, REF.address(CONFIG))["data"]["run.yaml"])
    assert manifest["spec"]["compute"]["address"].startswith("tls://")
    # Off in the chart: plain TCP, no Secret mounted.
    plain = build_dask_cluster(REF, run_manifest(), CONFIG.model_copy(update={"tls": False}))
    assert "--protocol" not in plain["spec"]["scheduler"]["spec"]["containers"][0]["args"]


def test_the_certificates_secret_is_owned_by_the_run() -> None:
    certificates = make_certificates("runs/slovenia-demo")
    secret = build_tls_secret(REF, certificates.files())
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert secret["type"] == "kubernetes.io/tls" and secret["immutable"] is True
    assert set(secret["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(certificates.ca.encode())
    cert = x509.load_pem_x509_certificate(certificates.cert.encode())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # One private key (the pods'); the CA's was never kept, so no other certificate can be made.
    assert "".join(secret["stringData"].values()).count("PRIVATE KEY-----") == 2


def test_a_real_scheduler_refuses_a_plain_client_and_another_run_and_accepts_the_run(
    scheduler: tuple[str, Path], tmp_path: Path
) -> None:
    address, tls_dir = scheduler
    with pytest.raises(OSError):  # the TLS handshake never happens: the connection is closed
        Client(f"tcp://{address}", timeout=5, security=Security())
    # A certificate of another run's CA (same kind of settings, another Secret) is refused.
    other = write(make_certificates("runs/other").files(), tmp_path / "other")
    with pytest.raises(OSError):
        Client(f"tls://{address}", timeout=5, security=security(other))
    # The run's own certificate: accepted, and a worker started from the rendered worker
    # command (the image's binaries, the pod's TLS settings) joins and computes.
    with Client(f"tls://{address}", timeout=10, security=security(tls_dir)) as client:
        assert client.scheduler_info()["address"] == f"tls://{address}"


def test_a_worker_started_with_the_pods_settings_joins_the_closed_scheduler(
    scheduler: tuple[str, Path], cluster_spec: dict[str, Any], tmp_path: Path
) -> None:
    address, tls_dir = scheduler
    (container,) = cluster_spec["spec"]["worker"]["spec"]["containers"]
    args = shlex.split(" ".join(container["args"]))
    args[2] = f"tls://{address}"
    args[args.index("--local-directory") + 1] = str(tmp_path / "worker")
    args += ["--host", "127.0.0.1", "--no-dashboard"]
    env = {**os.environ, **env_of(container, tls_dir)}
    env.pop("DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON", None)
    worker = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env)
    try:
        with Client(f"tls://{address}", timeout=10, security=security(tls_dir)) as client:
            client.wait_for_workers(1, timeout=30)
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
            (worker_address,) = client.scheduler_info()["workers"]
            assert worker_address.startswith("tls://127.0.0.1:")
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_network_policies_admit_only_the_runs_own_pods_and_the_dashboard_ingress() -> None:
    ingress = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    config = CONFIG.model_copy(
        update={"network_policy": NetworkPolicySettings(dashboard_from=[ingress])}
    )
    scheduler, workers = build_network_policies(REF, config)
    for policy in (scheduler, workers):
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert policy["metadata"]["ownerReferences"][0]["uid"] == REF.uid

    def components(peer: dict[str, Any]) -> set[str]:
        selector = peer["podSelector"]
        assert selector["matchLabels"] == {"sitsflow.dev/run": "slovenia-demo"}
        (expression,) = selector["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/component"
        return set(expression["values"])

    assert components(scheduler["spec"]) == {"scheduler"}
    to_port, to_dashboard = scheduler["spec"]["ingress"]
    assert to_port["ports"] == [{"protocol": "TCP", "port": 8786}]
    (peer,) = to_port["from"]
    assert "namespaceSelector" not in peer  # the run's own namespace only
    assert components(peer) == {"driver", "worker"}
    assert to_dashboard["ports"] == [{"protocol": "TCP", "port": 8787}]
    assert to_dashboard["from"][1:] == [ingress]
    assert components(workers["spec"]) == {"worker"}
    (rule,) = workers["spec"]["ingress"]
    assert [components(p) for p in rule["from"]] == [{"scheduler", "worker"}]
    # The selectors match the pods the DaskCluster and the Job make.
    cluster = build_dask_cluster(REF, run_manifest(), config)
    job = build_driver_job(REF, config)
    pods = {
        "scheduler": cluster["spec"]["scheduler"]["metadata"]["labels"],
        "worker": cluster["spec"]["worker"]["metadata"]["labels"],
        "driver": job["spec"]["template"]["metadata"]["labels"],
    }
    for role, pod_labels in pods.items():
        assert pod_labels["sitsflow.dev/run"] == "slovenia-demo"
        assert pod_labels["app.kubernetes.io/component"] == role
    # Off in the chart: none.
    off = CONFIG.model_copy(update={"network_policy": NetworkPolicySettings(enabled=False)})
    assert build_network_policies(REF, off) == []
