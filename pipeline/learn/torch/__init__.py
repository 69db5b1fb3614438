"""Neural networks on pixel time series: MLP, TempCNN, L-TAE or a user module, trained and
saved; the training loop, persistence and runtime that the patch networks
(``pipeline.learn.patch``) share.

The names below are imported on first use, so that looking up a torch learner (``learner.py``)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.learn.torch.estimator import TorchModel
    from pipeline.learn.torch.layout import TemporalLayout, from_feature_names
    from pipeline.learn.torch.models import ARCHITECTURES, LTAE, MLP, TempCNN
    from pipeline.learn.torch.persist import load_torch_model, save_torch_model
    from pipeline.learn.torch.train import check_network_spec, fit_network

_WHERE = {
    "ARCHITECTURES": "models",
    "LTAE": "models",
    "MLP": "models",
    "TempCNN": "models",
    "TemporalLayout": "layout",
    "TorchModel": "estimator",
    "check_network_spec": "train",
    "fit_network": "train",
    "from_feature_names": "layout",
    "load_torch_model": "persist",
    "save_torch_model": "persist",
}

__all__ = [
    "ARCHITECTURES",
    "LTAE",
    "MLP",
    "TempCNN",
    "TemporalLayout",
    "TorchModel",
    "check_network_spec",
    "fit_network",
    "from_feature_names",
    "load_torch_model",
    "save_torch_model",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
