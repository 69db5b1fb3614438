"""Certificates made per run, so that only the run's own pods can talk to its dask scheduler.

The operator keeps each run's certificates (``pipeline.run.certificates``: a CA of the run's own
and one certificate it signed) in a Secret owned by the SitsRun (deleted with it). The
scheduler, the workers and the driver mount that Secret and use dask's own TLS settings
(``pipeline.run.dask_spec.tls_environment``): every connection is encrypted, and a peer without a
certificate of this run's CA is refused. The maker lives in the run engine because a run started
with ``compute.cluster: kubernetes`` makes its certificates too, and the run engine never imports
this package.
"""

from __future__ import annotations

from pipeline.run.certificates import VALID_DAYS, RunCertificates, make_certificates

__all__ = ["VALID_DAYS", "RunCertificates", "make_certificates"]
