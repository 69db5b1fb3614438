"""The learners by kind: the one list of the kinds of model the chain knows.

Adding a kind is one class (a :class:`~pipeline.learn.learner.Learner`) plus one line here, or
one ``register_learner`` call from a plugin's module (a test registers a toy learner so). Built-in
learners are named by import path and imported on first use: torch loads only for torch models.
A learner registered at run time exists in the process that registered it; a distributed run's
workers know the built-in kinds and those their own imports register.
"""

from __future__ import annotations

import importlib
import threading

from pipeline.errors import ModelError
from pipeline.learn.learner import Learner

__all__ = ["learner_for", "learner_kinds", "register_learner"]

_BUILT_IN: dict[str, str] = {
    "sklearn": "pipeline.learn.sklearn:SklearnLearner",
    "torch": "pipeline.learn.torch.learner:TorchLearner",
    "external": "pipeline.learn.external:ExternalLearner",
    "torch_patch": "pipeline.learn.patch.learner:PatchLearner",
}

_learners: dict[str, Learner] = {}
_lock = threading.RLock()  # re-entrant: a built-in module may register while imported


def register_learner(learner: Learner, *, replace: bool = False) -> None:
    """Make ``learner`` the one of kind ``learner.kind``; a kind is registered once unless
    ``replace``."""
    if not isinstance(learner, Learner):
        raise TypeError(f"{learner!r} does not provide the Learner protocol")
    with _lock:
        taken = learner.kind in _BUILT_IN or learner.kind in _learners
        if taken and not replace:
            raise ValueError(
                f"a learner of kind {learner.kind!r} is already registered; pick another kind "
                "or pass replace=True"
            )
        _learners[learner.kind] = learner


def learner_kinds() -> tuple[str, ...]:
    """Every kind known in this process: built-in first, then registered."""
    return (*_BUILT_IN, *(k for k in _learners if k not in _BUILT_IN))


def learner_for(kind: str) -> Learner:
    """The learner of ``kind`` (ModelError naming ``model.kind`` for an unknown one)."""
    with _lock:
        found = _learners.get(kind)
        if found is None and kind in _BUILT_IN:
            module, _, name = _BUILT_IN[kind].partition(":")
            found = _learners[kind] = getattr(importlib.import_module(module), name)()
    if found is None:
        raise ModelError(
            f"no learner of kind {kind!r}",
            fix=f"use one of {', '.join(learner_kinds())}, or import the module that registers "
            f"kind {kind!r}",
            field="model.kind",
        )
    return found
