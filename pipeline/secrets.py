"""Credential values this process knows of, and the one function that masks them in text.

A value is a credential when it came from a credential source: a variable named in a catalog's
``headers_from_env`` (registered when the header is built, whatever the variable's name), one of
the GDAL / AWS / Azure / Google / Swift credential variables below, or a variable whose name looks
secret (``*_TOKEN``, ``*PASSWORD*`` ...). ``mask`` replaces each such value, and each token inside
it (the part after ``Bearer ``, either half of ``user:password``), by ``***``: a server that
echoes only the token, or a message that quotes part of a header, leaks nothing.

Every error (``pipeline.errors``), log line (``pipeline.run.logs``) and stored summary goes
through ``mask``. Library code only; no import of the run or the manifest.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping

MASK = "***"
MIN_LENGTH = 6  # shorter values ("true", "eu") would mask ordinary words

#: Variables that hold credentials for GDAL (/vsicurl/, /vsis3/, /vsiaz/, /vsigs/ ...), boto/s3fs,
#: Azure and Google clients, whatever their names look like.
CREDENTIAL_VARIABLES = frozenset({
    "GDAL_HTTP_BEARER", "GDAL_HTTP_USERPWD", "GDAL_HTTP_PROXYUSERPWD", "GDAL_HTTP_HEADERS",
    "GDAL_HTTP_AUTH", "CPL_AWS_WEB_IDENTITY_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_SAS", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_KEY",
    "GS_ACCESS_KEY_ID", "GS_SECRET_ACCESS_KEY", "GS_OAUTH2_REFRESH_TOKEN",
    "GS_OAUTH2_CLIENT_SECRET", "GS_OAUTH2_PRIVATE_KEY", "GOOGLE_OAUTH_ACCESS_TOKEN",
    "OSS_ACCESS_KEY_ID", "OSS_SECRET_ACCESS_KEY", "SWIFT_AUTH_TOKEN", "SWIFT_KEY",
})  # fmt: skip

# Variable names whose values are secrets (STAC_API_TOKEN, DB_PASSWORD ...).
SECRET_NAME = re.compile(
    r"(SECRET|TOKEN|PASSWORD|PASSWD|PWD|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_KEY|AUTH|SAS|"
    r"SIGNATURE|COOKIE|CONNECTION_STRING|BEARER|USERPWD)",
    re.IGNORECASE,
)
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})  # the shell's working directories
# Words of an Authorization value that are not secret ("Bearer xyz": only xyz is).
_SCHEMES = frozenset({
    "bearer", "basic", "token", "digest", "negotiate", "apikey", "aws4-hmac-sha256",
    "authorization",
})  # fmt: skip
_SEPARATORS = re.compile(r"[\s:;,=&\"']+")

_lock = threading.Lock()
_registered: set[str] = set()


def parts(value: str) -> set[str]:
    """``value`` and the tokens inside it that are long enough to be masked."""
    found = {value} if len(value) >= MIN_LENGTH else set()
    for token in _SEPARATORS.split(value):
        if len(token) >= MIN_LENGTH and token.lower() not in _SCHEMES:
            found.add(token)
    return found


def register(value: str) -> None:
    """Remember a credential value (a header from the environment) for the life of the process."""
    if value:
        with _lock:
            _registered.update(parts(value))


def is_credential_variable(name: str) -> bool:
    return name in CREDENTIAL_VARIABLES or (
        name not in _NOT_SECRET and bool(SECRET_NAME.search(name))
    )


def known(environ: Mapping[str, str] | None = None) -> set[str]:
    """Every credential value (and part of one) of the environment and the registry."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    # Names first, then each value: another thread may take a variable out meanwhile (the fork
    # server's start sets and restores the nanny's settings), which env.items() turns into a
    # KeyError.
    for name in list(env):
        value = env.get(name)
        if value and is_credential_variable(name):
            found.update(parts(value))
    with _lock:
        found.update(_registered)
    return found


def mask(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every credential value, and every part of one, replaced by ``***``."""
    values = known() if secrets is None else set(secrets)
    # Longest first, so that a secret containing another is masked whole.
    for secret in sorted(values, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text
