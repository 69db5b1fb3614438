"""Every built-in stage's module, imported at once (a cluster's warm-up names this module to
load the workers' code before the first unit). The stages live in ``pipeline.stages``."""

from pipeline.stages import BUILT_IN, get

MODULES = tuple(type(get(name)).__module__ for name in BUILT_IN)
