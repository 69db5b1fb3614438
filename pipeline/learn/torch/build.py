"""A network from its spec, for the pixel and the patch kinds alike: the class (built in, or a
``torch.nn.Module`` by import path), constructed with the data's dimensions it names and the
user's ``params``, then run on a dummy batch so that a bad module fails, named, before any
training or prediction."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from pipeline.errors import ModelError

__all__ = ["DummyBatch", "construct", "module_class"]


def module_class(
    architecture: str, built_in: Mapping[str, type[nn.Module]], what: str
) -> type[nn.Module]:
    """The class ``architecture`` names: built in, or ``package.module:Class``."""
    if architecture in built_in:
        return built_in[architecture]
    module_name, _, attr = architecture.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ModelError(
            f"{what} {architecture!r} is not built in and cannot be imported",
            fix=f"use one of {', '.join(built_in)}, or the import path package.module:Class "
            "of a torch.nn.Module on the workers' Python path",
            field="model.architecture",
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelError(
            f"{architecture!r} is not a torch.nn.Module class",
            fix="give the import path of a class derived from torch.nn.Module",
            field="model.architecture",
        )
    return cls


@dataclass(frozen=True)
class DummyBatch:
    """The batch a new network is tried on and what it must return, with the words that explain
    a failure: ``name`` the network as messages call it, ``takes`` the input's axes, ``returns``
    the output's, ``fix_input`` and ``fix_output`` what to change."""

    shape: tuple[int, ...]
    expected: tuple[int, ...]
    name: str
    takes: str
    returns: str
    fix_input: str
    fix_output: str


def construct(
    cls: type[nn.Module], architecture: str, params: dict[str, Any], dims: Any, dummy: DummyBatch
) -> nn.Module:
    """``cls`` built with the dimensions (a dataclass) its constructor names and ``params``,
    and checked on ``dummy``."""
    signature = inspect.signature(cls.__init__)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    derived = asdict(dims)
    given = {k: v for k, v in derived.items() if accepts_any or k in signature.parameters}
    clash = sorted(set(given) & set(params))
    if clash:
        raise ModelError(
            f"model.params sets {clash}, which sitsflow derives from the data",
            fix=f"remove {', '.join(clash)} from model.params",
            field="model.params",
        )
    try:
        network = cls(**given, **params)
    except (TypeError, ValueError) as exc:
        accepted = [n for n in signature.parameters if n != "self" and n not in derived]
        raise ModelError(
            f"{architecture} cannot be built with params {params}: {exc}",
            fix=f"use hyper-parameters it accepts ({', '.join(accepted) or 'none'}) with valid "
            "values in model.params",
            field="model.params",
        ) from None
    _try_on(network, dummy)
    return network


def _try_on(network: nn.Module, dummy: DummyBatch) -> None:
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            out = network(torch.zeros(dummy.shape))
    except Exception as exc:  # any failure of user code on a well-formed batch
        raise ModelError(
            f"{dummy.name} fails on a batch of shape {dummy.shape}{dummy.takes}: "
            f"{type(exc).__name__}: {exc}",
            fix=dummy.fix_input,
            field="model.architecture",
        ) from None
    finally:
        network.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != dummy.expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{dummy.name} returns {got} for a batch of shape {dummy.shape}, expected "
            f"{dummy.expected}{dummy.returns}",
            fix=dummy.fix_output,
            field="model.architecture",
        )
