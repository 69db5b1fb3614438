"""The saved form of a scikit-learn model: a folder with the fitted estimator (``model.skops``, or
``model.joblib`` when skops cannot serialize it) and ``model.json`` (its contract). A forest's
compiled predictor (:mod:`pipeline.learn.compiled`) is built from the estimator when it is
loaded: nothing else to save.

skops loading constructs only types it is allowed to, unlike a pickle.
"""

from __future__ import annotations

import pickle
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import joblib
import sklearn

from pipeline.errors import ModelError
from pipeline.learn import compiled
from pipeline.learn.contract import CONTRACT_FILE, ModelContract, read_contract
from pipeline.storage import atomic_path

__all__ = [
    "JOBLIB_FILE",
    "MODEL_FILE",
    "SKOPS_FILE",
    "TRUSTED_PACKAGES",
    "dump_estimator",
    "inference_of",
    "load_contract",
    "load_estimator",
    "load_model",
    "load_skops",
    "save_model",
]

SKOPS_FILE = "model.skops"
JOBLIB_FILE = "model.joblib"
MODEL_FILE = JOBLIB_FILE  # the name contracts written before skops support point to
# Types from these packages may be constructed when a .skops file is loaded; the estimator's own
# package is added (e.g. xgboost for xgboost.XGBClassifier).
TRUSTED_PACKAGES = frozenset({"sklearn", "numpy", "scipy"})


def inference_of(contract: ModelContract) -> str:
    """How the model predicts (``model.inference`` as its contract records it; 'auto' when not)."""
    return str(contract.config.get("inference", "auto"))


#: The one array-API namespace whose import imports torch (sklearn's vendored array_api_compat).
_TORCH_NAMESPACE = "sklearn.externals.array_api_compat.torch"


def import_skops() -> Any:
    """``skops.io``, imported without importing torch.

    Its import lists every scikit-learn estimator (``sklearn.utils.all_estimators``), whose walk
    over scikit-learn's packages imports the vendored array-API namespace for torch, and with it
    torch when it is installed: 1.5 of the import's 2.3 s, and torch's memory in every worker of
    a scikit-learn run. The walk passes over a package that does not import, so that namespace
    is made unimportable while skops imports (torch itself is left alone: other libraries look
    for it in ``sys.modules``), and importable again afterwards.
    """
    if "skops.io" not in sys.modules and _TORCH_NAMESPACE not in sys.modules:
        sys.modules[_TORCH_NAMESPACE] = None  # type: ignore[assignment]
        try:
            import skops.io  # noqa: F401  (imported here, returned below)
        finally:
            if sys.modules.get(_TORCH_NAMESPACE, 0) is None:
                del sys.modules[_TORCH_NAMESPACE]
    import skops.io as sio

    return sio


def dump_estimator(estimator: Any, folder: Path, estimator_path: str = "sklearn") -> str:
    """Write the estimator into ``folder``; its file name.

    skops when the file loads back under the trust policy of ``load_skops`` (skops writes some
    objects it cannot read back, e.g. compiled regular expressions, and functions by name),
    joblib otherwise.
    """
    path = folder / SKOPS_FILE
    try:
        sio = import_skops()  # its import scans every estimator (a second): only when saving
        sio.dump(estimator, path)
        load_skops(path, estimator_path)
        return SKOPS_FILE
    except Exception:  # any failure to write or read back means: not storable with skops
        path.unlink(missing_ok=True)
    try:
        joblib.dump(estimator, folder / JOBLIB_FILE)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"the fitted model cannot be saved ({type(exc).__name__}: {exc})",
            fix="avoid lambdas and local functions in the estimator; define functions at the "
            "top level of an importable module",
            field="model",
        ) from None
    return JOBLIB_FILE


def _package(import_path: str) -> str:
    return import_path.replace(":", ".").split(".")[0]


def load_skops(path: Path, estimator_path: str, field: str = "model.path") -> Any:
    """Load a .skops file, constructing only types of scikit-learn, numpy, scipy and the estimator's
    own package; anything else is refused by name."""
    sio = import_skops()

    untrusted = sio.get_untrusted_types(file=path)
    allowed = TRUSTED_PACKAGES | {_package(estimator_path)}
    refused = [t for t in untrusted if t.split(".")[0] not in allowed]
    if refused:
        raise ModelError(
            f"{str(path)!r} would construct types outside scikit-learn, numpy, scipy and "
            f"{_package(estimator_path)}: {', '.join(refused)}",
            fix="save the model with only scikit-learn objects, or as a joblib file if you "
            "trust its origin",
            field=field,
        )
    return sio.load(path, trusted=untrusted)


def load_estimator(folder: Path, contract: ModelContract) -> Any:
    if contract.kind != "sklearn":
        raise ModelError(
            f"the model in {str(folder)!r} is a {contract.kind} model, not a scikit-learn one",
            fix="load it with pipeline.learn.load_model, which reads every kind",
            field="model",
        )
    path = folder / contract.model_file
    if not path.is_file():
        raise ModelError(
            f"model file {str(path)!r} named by {CONTRACT_FILE} does not exist",
            fix="point to an intact model folder (train the model again if it was deleted)",
            field="model",
        )
    if path.suffix == ".skops":
        return load_skops(path, contract.estimator)
    return joblib.load(path)


def save_model(estimator: Any, contract: ModelContract, folder: Path) -> None:
    """Write the model folder atomically: readers see the old folder or the whole new one."""
    estimator = compiled.unwrap(estimator)  # a loaded model (an external one) saved again
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        model_file = dump_estimator(estimator, tmp, contract.estimator)
        saved = replace(
            contract,
            model_file=model_file,
            versions={
                **contract.versions,
                "sklearn": sklearn.__version__,
                "skops": _skops_version(),
            },
        )
        (tmp / CONTRACT_FILE).write_text(saved.to_json(), encoding="utf-8")


def load_contract(folder: Path) -> ModelContract:
    return read_contract(folder)


def load_model(folder: Path) -> tuple[Any, ModelContract]:
    contract = read_contract(folder)
    return load_estimator(folder, contract), contract


def _skops_version() -> str:
    from importlib.metadata import version

    return version("skops")
