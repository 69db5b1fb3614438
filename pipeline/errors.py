"""One exception hierarchy for the whole chain.

Every error a user can cause names the value, the rule it broke and how to fix it, so that the
manifest can be corrected from the message alone. Messages never contain credentials: every
rendered message goes through ``pipeline.secrets.mask``.
"""

from __future__ import annotations

from pipeline.secrets import mask


class SitsflowError(Exception):
    """Base of every error sitsflow raises on purpose (the CLI prints these without a traceback)."""

    def __init__(self, what: str, *, fix: str | None = None, field: str | None = None) -> None:
        self.what = what
        self.fix = fix
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.field:
            parts.append(f"{self.field}: ")
        parts.append(self.what.rstrip("."))
        parts.append(".")
        if self.fix:
            parts.append(f" Fix: {self.fix.rstrip('.')}.")
        return mask("".join(parts))


class ManifestError(SitsflowError):
    """The run manifest is malformed or inconsistent."""


class CatalogError(SitsflowError):
    """A catalog, item or asset cannot be found, read or understood."""


class InputDataError(SitsflowError):
    """Pixels or reference data do not fit what the run needs."""


class OutputError(SitsflowError):
    """An output location cannot be written."""


class ModelError(SitsflowError):
    """A model cannot be built, trained, loaded or applied."""


class ComputeError(SitsflowError):
    """The cluster cannot be reached, or its workers cannot hold the work."""
