"""Neural networks on pixel time series: MLP, TempCNN, L-TAE or a user module, trained and saved."""

from pipeline.learn.torch.estimator import TorchModel
from pipeline.learn.torch.layout import TemporalLayout, from_feature_names
from pipeline.learn.torch.models import ARCHITECTURES, LTAE, MLP, TempCNN
from pipeline.learn.torch.persist import load_torch_model, save_torch_model
from pipeline.learn.torch.train import check_network_spec, fit_network

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
