"""Warnings in a hierarchy users can turn into errors or silence as a group.

import warnings
from pipeline.warnings import SitsflowWarning
warnings.simplefilter("error", SitsflowWarning)   # strict: every warning stops the run
"""

from __future__ import annotations


class SitsflowWarning(UserWarning):
    """Base class of every warning sitsflow emits."""


class DataQualityWarning(SitsflowWarning):
    """Input data are usable but poorer than asked (few valid dates, small classes...)."""


class SamplingWarning(SitsflowWarning):
    """A sampling or split rule was relaxed (the message says how)."""


class CatalogWarning(SitsflowWarning):
    """Discovery did something the user should know of (e.g. replaced a saved item list)."""


def category_named(name: str) -> type[SitsflowWarning]:
    """The sitsflow warning class called ``name`` (as recorded by a worker or a cache entry);
    ``SitsflowWarning`` for a name it does not know."""
    found = globals().get(name)
    if isinstance(found, type) and issubclass(found, SitsflowWarning):
        return found
    return SitsflowWarning
