"""Compiled inference of tree ensembles: scikit-learn's forests predicted by ONNX Runtime.

Why ONNX Runtime (skl2onnx converts the fitted trees) rather than treelite or a shared library
generated with tl2cgen: docs/design/0010-compiled-tree-inference.md, with the measurements.

What stays equal to scikit-learn:

* **Routing.** scikit-learn compares each pixel's feature, cast to float32, with a float64
  threshold; skl2onnx stores, for each threshold, the value that gives the same comparison for
  every float32 (``adjust_threshold_for_sklearn``), so every pixel reaches the same leaf.
* **Probabilities** are the mean of the same leaf values (for gradient boosting, the same
  link function of the same sums), summed by the engine in float32: each of the n trees' terms
  and additions rounds by at most 2**-24 of a sum that stays below 1, so a probability differs
  from scikit-learn's by at most about (n + 2) * 2**-24 (6e-6 for 100 trees; measured: 7e-7).
* **Labels.** scikit-learn takes the first class of highest probability. Rounding can reorder
  or tie two probabilities only when they are within twice that bound of each other. Rows whose
  two highest probabilities are that close (:func:`tie_tolerance`: 4 (n + 2) 2**-24, at least
  1e-5; far below a real gap between means of leaf fractions, 0.01 for 100 fully grown trees)
  are predicted again by scikit-learn itself, so their labels and probabilities are
  scikit-learn's. Exact ties are common (100 fully grown trees give multiples of 0.01: 0.1 % of
  the pixels measured): this is not a corner case.

Histogram gradient boosting is not supported (skl2onnx 1.20 does not convert scikit-learn 1.9's
trees): it predicts with scikit-learn.

When it is used (``model.inference``): ``compiled`` always; ``auto`` (the default) for tables of at
least :data:`AUTO_MIN_ROWS` pixels (:class:`AutoForest`). Converting a forest costs seconds (2 s
for the demo's 100 trees) and saves about 28 microseconds of CPU per pixel, so it pays from about
100,000 pixels: a small run (the demo, 10,100 pixels in chunks of a few thousand) never converts,
and its maps stay scikit-learn's to the bit. The choice depends only on a table's size, which the
plan fixes, so a resumed or rerun unit makes the same choice.

The converted model (``compiled/<key>.onnx`` in the model folder) is built once per trained model
when it is saved (``compiled``), or on first use where it is missing (``auto``, or a model saved
before this engine existed) (a model saved before, or by a build
without the engine), under a file lock so that a machine's workers build it once. ``key``
hashes the estimator's file and the converter's versions: a new model or a new converter, a new
file; resuming a run never reads an artefact of another model. Anything that fails (the engine
not installed, an estimator it cannot convert, a file it cannot write) is logged once per
process and leaves the estimator to scikit-learn.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from pipeline.learn.learner import model_input

__all__ = [
    "ARTEFACT_FOLDER",
    "AUTO_MIN_ROWS",
    "MIN_TIE_TOLERANCE",
    "AutoForest",
    "CompiledForest",
    "auto_or_none",
    "build_artefact",
    "compiled_or_none",
    "engine_versions",
    "supports",
    "unwrap",
]

log = logging.getLogger(__name__)

ARTEFACT_FOLDER = "compiled"
BATCH_ROWS = 65_536  # rows per engine call: bounds the engine's buffers
FORMAT = 2  # bump when the way an artefact is built changes: old ones are then ignored
MIN_TIE_TOLERANCE = 1e-5
AUTO_MIN_ROWS = 65_536  # a 256 px chunk: from there the conversion has paid for itself

# Estimators whose conversion keeps scikit-learn's routing exactly (see the module's doc); the
# test suite compares each of them with scikit-learn on real data.
SUPPORTED = frozenset(
    {
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.ensemble._forest.ExtraTreesRegressor",
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._gb.GradientBoostingRegressor",
    }
)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message)


def _qualified(estimator: Any) -> str:
    cls = type(estimator)
    return f"{cls.__module__}.{cls.__qualname__}"


def supports(estimator: Any) -> bool:
    """Whether ``estimator`` (fitted or not) can be predicted by the compiled engine."""
    return _qualified(estimator) in SUPPORTED


def engine_versions() -> dict[str, str] | None:
    """The versions of the converter and the engine, or None when one is not installed."""
    try:
        return {
            name: importlib.metadata.version(name) for name in ("skl2onnx", "onnx", "onnxruntime")
        }
    except importlib.metadata.PackageNotFoundError:
        return None


def import_engine() -> None:
    """Import the converter and the engine when installed (a worker's warm-up: 1 s of imports
    that the first train or predict unit would pay)."""
    if engine_versions() is not None:
        import onnxruntime  # noqa: F401
        import skl2onnx  # noqa: F401


def artefact_name(model_file: Path, versions: dict[str, str]) -> str:
    """``compiled/<key>.onnx``: the key hashes the estimator's file, the converter's versions and
    this module's format (not the engine's: it reads any version's file of its opset)."""
    digest = hashlib.sha256()
    digest.update(
        f"format={FORMAT};skl2onnx={versions['skl2onnx']};onnx={versions['onnx']};".encode()
    )
    with model_file.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return f"{ARTEFACT_FOLDER}/{digest.hexdigest()[:32]}.onnx"


def convert(estimator: Any) -> bytes:
    """The ONNX model of a fitted, supported estimator (float32 input, as its trees read it)."""
    from skl2onnx import to_onnx

    sample = np.zeros((1, int(estimator.n_features_in_)), dtype=np.float32)
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "classes_") else None
    onnx_model = to_onnx(estimator, sample, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    return bytes(onnx_model.SerializeToString())


def build_artefact(estimator: Any, model_file: Path, folder: Path) -> Path | None:
    """Convert ``estimator`` (saved as ``model_file``) into ``folder``'s artefact; its path, or
    None (logged once) when the engine is missing or the conversion fails."""
    versions = engine_versions()
    if versions is None or not supports(estimator):
        return None
    path = folder / artefact_name(model_file, versions)
    try:
        data = convert(estimator)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(path)
    except Exception as exc:  # any failure leaves the model to scikit-learn
        _warn_once(
            f"convert:{_qualified(estimator)}",
            f"compiled inference unavailable for {_qualified(estimator)} "
            f"({type(exc).__name__}: {exc}); predicting with scikit-learn",
        )
        return None
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _artefact(estimator: Any, model_file: Path, folder: Path) -> Path | None:
    """The artefact beside the model, built now if missing (once per machine: file lock); in the
    temporary folder where the model's folder cannot be written."""
    versions = engine_versions()
    if versions is None:
        _warn_once(
            "missing",
            "compiled inference unavailable: skl2onnx, onnx or onnxruntime is not installed "
            "(pip install sitsflow installs them); predicting with scikit-learn",
        )
        return None
    name = artefact_name(model_file, versions)
    if (folder / name).is_file():
        return folder / name
    fallback = Path(tempfile.gettempdir()) / "sitsflow-compiled"
    for place in (folder, fallback):
        try:
            with _file_lock(place / ARTEFACT_FOLDER / ".lock"):
                if (place / name).is_file():
                    return place / name
                return build_artefact(estimator, model_file, place)
        except OSError:
            continue
    return None


def _threads(estimator: Any) -> int:
    """scikit-learn's thread count for this estimator (``n_jobs``; None: 1)."""
    n_jobs = estimator.get_params(deep=False).get("n_jobs")
    return max(int(joblib.effective_n_jobs(n_jobs)), 1)


class _EstimatorView:
    """A predictor in front of a fitted scikit-learn ``estimator``: every attribute it does not
    define is the estimator's, except ``feature_names_in_`` (a predictor takes the features as
    an array, in the order the estimator was fitted on; the chain checks that order)."""

    estimator: Any

    def __getattr__(self, name: str) -> Any:
        if name == "feature_names_in_" or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.estimator, name)


class CompiledForest(_EstimatorView):
    """A fitted forest that predicts through ONNX Runtime, with scikit-learn's labels.

    ``predict_proba``, ``predict`` and ``classes_`` as scikit-learn's; every other attribute is
    the estimator's (``estimator``), except ``feature_names_in_``: the engine takes the
    features as an array, in the order the estimator was fitted on (the chain checks it).
    """

    def __init__(self, estimator: Any, onnx_model: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.estimator = estimator
        self._onnx = onnx_model
        self.threads = _threads(estimator) if threads is None else threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Threads that wait spin by default: on a machine shared with other workers, they take
        # the cores the others need (measured: 2 threads slower than 1 on a loaded machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            onnx_model, options, providers=["CPUExecutionProvider"]
        )
        found = self._session.get_inputs()[0]
        if found.type != "tensor(float)":  # an artefact built another way: not this engine's
            raise TypeError(f"the model takes {found.type}, not tensor(float)")
        self._input = found.name
        self._failed = False
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.is_classifier = hasattr(estimator, "classes_")
        self.tolerance = tie_tolerance(estimator)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CompiledForest, (self.estimator, self._onnx, self.threads))

    def _engine_failed(self, exc: Exception) -> None:
        self._failed = True
        _warn_once(
            f"run:{_qualified(self.estimator)}",
            f"compiled inference failed for {_qualified(self.estimator)} "
            f"({type(exc).__name__}: {exc}); predicting with scikit-learn",
        )

    def _run(self, table: np.ndarray, output: int) -> np.ndarray:
        """One output of the engine for a float32 table, in batches of :data:`BATCH_ROWS`."""
        parts = []
        for start in range(0, max(table.shape[0], 1), BATCH_ROWS):
            batch = table[start : start + BATCH_ROWS]
            found = self._session.run([self._outputs[output]], {self._input: batch})[0]
            parts.append(np.asarray(found, dtype=np.float64))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def predict_proba(self, features: Any) -> np.ndarray:
        if not self.is_classifier:
            raise AttributeError(f"{type(self.estimator).__name__} has no predict_proba")
        table = np.asarray(features, dtype=np.float32)  # as scikit-learn's trees read them
        if not self._failed:
            try:
                probabilities = self._run(table, 1)
            except Exception as exc:  # the engine failing leaves the model to scikit-learn
                self._engine_failed(exc)
        if self._failed:
            return np.asarray(self.estimator.predict_proba(model_input(self.estimator, table)))
        near = near_ties(probabilities, self.tolerance)
        if near.any():  # scikit-learn decides these rows, with its own sums
            rows = model_input(self.estimator, np.ascontiguousarray(table[near]))
            probabilities[near] = self.estimator.predict_proba(rows)
        return probabilities

    def predict(self, features: Any) -> np.ndarray:
        if self.is_classifier:
            classes = np.asarray(self.estimator.classes_)
            return classes[self.predict_proba(features).argmax(axis=1)]
        table = np.asarray(features, dtype=np.float32)
        if not self._failed:
            try:
                values = self._run(table, 0)
                return values.reshape(values.shape[0], -1)[:, 0]
            except Exception as exc:  # the engine failing leaves the model to scikit-learn
                self._engine_failed(exc)
        return np.asarray(self.estimator.predict(model_input(self.estimator, table)))


def tie_tolerance(estimator: Any) -> float:
    """How close two probabilities of ``estimator`` must be for scikit-learn to decide the row:
    twice the engine's float32 rounding bound, with a margin (see the module's doc)."""
    trees = int(getattr(estimator, "n_estimators_", getattr(estimator, "n_estimators", 1)))
    return max(MIN_TIE_TOLERANCE, 4 * (trees + 2) * 2.0**-24)


def near_ties(probabilities: np.ndarray, tolerance: float) -> np.ndarray:
    """Rows whose two highest probabilities are within ``tolerance``."""
    if probabilities.shape[1] < 2:
        return np.zeros(probabilities.shape[0], dtype=bool)
    top2 = np.partition(probabilities, -2, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0] <= tolerance)


def compiled_or_none(estimator: Any, model_file: Path, folder: Path) -> CompiledForest | None:
    """The compiled predictor of a saved estimator, or None where scikit-learn must predict (an
    estimator the engine does not support; the engine missing or failing: logged once)."""
    if not supports(estimator):
        return None
    path = _artefact(estimator, model_file, folder)
    if path is None:
        return None
    try:
        return CompiledForest(estimator, path.read_bytes())
    except Exception as exc:  # a broken engine or file leaves the model to scikit-learn
        _warn_once(
            f"load:{_qualified(estimator)}",
            f"compiled inference unavailable: {path} does not load ({type(exc).__name__}: "
            f"{exc}); predicting with scikit-learn",
        )
        return None


class AutoForest(_EstimatorView):
    """``model.inference: auto``: scikit-learn for tables under :data:`AUTO_MIN_ROWS` rows, the
    compiled engine (its artefact built on first use, once per machine) for larger ones.

    Same interface as :class:`CompiledForest`; the choice depends on a table's size only.
    """

    def __init__(self, estimator: Any, model_file: Path, folder: Path) -> None:
        self.estimator = estimator
        self._model_file = model_file
        self._folder = folder
        self._engine: CompiledForest | None = None
        self._tried = False
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (AutoForest, (self.estimator, self._model_file, self._folder))

    def engine_for(self, rows: int) -> CompiledForest | None:
        """The compiled engine for a table of ``rows`` rows; None: scikit-learn predicts it."""
        if rows < AUTO_MIN_ROWS:
            return None
        with self._lock:
            if not self._tried:
                self._tried = True
                self._engine = compiled_or_none(self.estimator, self._model_file, self._folder)
        return self._engine

    def predict_proba(self, features: Any) -> np.ndarray:
        table = np.asarray(features, dtype=np.float32)  # as scikit-learn's trees read them
        engine = self.engine_for(table.shape[0])
        if engine is not None:
            return engine.predict_proba(table)
        return np.asarray(self.estimator.predict_proba(model_input(self.estimator, table)))

    def predict(self, features: Any) -> np.ndarray:
        table = np.asarray(features, dtype=np.float32)
        engine = self.engine_for(table.shape[0])
        if engine is not None:
            return engine.predict(table)
        return np.asarray(self.estimator.predict(model_input(self.estimator, table)))


def auto_or_none(estimator: Any, model_file: Path, folder: Path) -> AutoForest | None:
    """The ``auto`` predictor of a saved estimator; None where the engine cannot serve it."""
    if not supports(estimator):
        return None
    return AutoForest(estimator, model_file, folder)


def unwrap(model: Any) -> Any:
    """The scikit-learn estimator behind a compiled predictor (the model itself otherwise): what
    is saved and recoded, since a predictor is rebuilt from its estimator when loaded."""
    return model.estimator if isinstance(model, CompiledForest | AutoForest) else model
