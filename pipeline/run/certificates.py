"""A run's own certificate authority, and the one certificate every party of its dask cluster
presents.

A dask scheduler runs whatever its clients send, with the credentials of its workers. Each run
therefore gets its own CA and one certificate signed by it: the scheduler, the workers and the
driver present it, and dask's own TLS settings (``pipeline.run.dask_spec.tls_environment``) refuse
a peer without a certificate of this CA. dask checks the chain, not host names, so one
certificate serves every role, and a driver reaching the scheduler through a port-forward
(``tls://127.0.0.1:<port>``) is accepted like a pod. The CA's key is thrown away once it has
signed: no new certificate can be made for the run.

Two callers: the operator keeps the certificates in a Secret owned by the SitsRun
(``pipeline.k8s.tls``); a run started with ``compute.cluster: kubernetes`` keeps them in a Secret
it deletes with its DaskCluster, and its driver reads them from a private folder
(``write_private``, ``client_security``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.run.dask_spec import TLS_CA, TLS_CERT, TLS_KEY

if TYPE_CHECKING:
    from distributed.security import Security

VALID_DAYS = 366  # longer than any run; a rerun after that gets a new Secret (see the operator)


@dataclass(frozen=True)
class RunCertificates:
    """PEM texts: the run's CA certificate, and the certificate and key every pod presents."""

    ca: str
    cert: str
    key: str

    def files(self) -> dict[str, str]:
        """By file name, as the Secret holds them and dask reads them."""
        return {TLS_CA: self.ca, TLS_CERT: self.cert, TLS_KEY: self.key}


def make_certificates(run: str, *, days: int = VALID_DAYS) -> RunCertificates:
    """A new CA for ``run`` and one certificate it signed (ECDSA P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sitsflow"),
                x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
            ]
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"{run} dask CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(f"{run} dask"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # Each pod is a server (it listens) and a client (it connects).
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return RunCertificates(
        ca=ca.public_bytes(pem).decode(),
        cert=cert.public_bytes(pem).decode(),
        key=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


def write_private(certificates: RunCertificates, folder: Path) -> Path:
    """Write the certificates into ``folder`` (made 0700) as files only this user reads (0600);
    return the folder."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for name, text in certificates.files().items():
        path = folder / name
        # Created 0600 (never briefly readable by others), whatever the umask.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        path.chmod(0o600)
    return folder


def client_security(folder: Path) -> Security:
    """The driver's dask ``Security`` for certificates written by ``write_private``: encryption
    required, the run's CA trusted, the run's certificate presented."""
    from distributed.security import Security

    return Security(
        tls_ca_file=str(folder / TLS_CA),
        tls_client_cert=str(folder / TLS_CERT),
        tls_client_key=str(folder / TLS_KEY),
        require_encryption=True,
    )
