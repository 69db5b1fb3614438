"""Certificates made per run, so that only the run's own pods can talk to its dask scheduler.

A dask scheduler runs whatever its clients send, with the credentials of its workers. Each run
therefore gets its own certificate authority and one certificate signed by it, kept in a Secret
owned by the SitsRun (deleted with it). The scheduler, the workers and the driver mount that
Secret and use dask's own TLS settings (``pipeline.run.dask_spec.tls_environment``): every
connection is encrypted, and a peer without a certificate of this run's CA is refused. dask checks
the chain, not host names, so one certificate serves every role. The CA's key is thrown away once
it has signed: no new certificate can be made for the run.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from pipeline.run.dask_spec import TLS_CA, TLS_CERT, TLS_KEY

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
