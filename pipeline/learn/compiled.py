"""Compiled inference of tree ensembles: scikit-learn's forests and boosting, to the bit.

A supported estimator's trees are laid out once when the model is loaded
(:func:`pipeline.learn.trees.flatten`: milliseconds, no file, no converter) and walked by a
numba kernel compiled at install (``sitsflow warm``). Why this engine rather than ONNX Runtime,
treelite or generated C: docs/design/0010-compiled-tree-inference.md, with the measurements.

What it gives is scikit-learn's own result, not an approximation of it:

* **Routing**: each feature cast to float32 as scikit-learn casts it, compared with the same
  float64 threshold. A table with a missing value (NaN) is predicted by scikit-learn itself,
  which sends NaN where each node learned to (the kernel does not look for NaN: it is six
  times faster without the test); a chunk's pixels with a NaN feature are not predicted.
* **Sums**: the same leaf values added in the same order in float64 (a forest's trees in order,
  then divided by their number; boosting's stages in order, each ``learning_rate * value``,
  from scikit-learn's own initial raw prediction, then scikit-learn's own link function), so
  that probabilities, values and labels equal scikit-learn's with one thread bit for bit.
  (With ``n_jobs`` > 1 scikit-learn itself adds the trees in whatever order its threads finish,
  so its own results vary in the last bit from run to run; this engine's do not.)

A chunk of the cube is predicted where its features lie (:meth:`CompiledForest.predict_pixels`:
the (features, h, w) block and the list of its valid pixels), without copying them into a table
(0.12 s and a table as large as the chunk saved per 512 px chunk of 185 features).

Supported: random forests and extra trees (classifiers and regressors) and gradient boosting
(classifiers and regressors with scikit-learn's default initial estimator), of one output.
Anything else predicts with scikit-learn (``model.inference: compiled`` refuses it at check).
When it is used (``model.inference``): ``auto`` (the default) and ``compiled`` wherever it is
supported: it costs nothing to set up and changes no bit, so there is no size below which
scikit-learn is better; ``sklearn`` never.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import joblib
import numpy as np

from pipeline.learn.learner import model_input
from pipeline.learn.trees import FlatTrees, add_trees, flatten

__all__ = [
    "CompiledForest",
    "compiled_or_none",
    "load_kernels",
    "supports",
    "unwrap",
]

FORESTS = frozenset(
    {
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.ensemble._forest.ExtraTreesRegressor",
    }
)
BOOSTING = frozenset(
    {
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._gb.GradientBoostingRegressor",
    }
)
MIN_ROWS_PER_THREAD = 16_384  # below this, one thread: starting others costs more


def _qualified(estimator: Any) -> str:
    cls = type(estimator)
    return f"{cls.__module__}.{cls.__qualname__}"


def supports(estimator: Any) -> bool:
    """Whether ``estimator`` (fitted or not) can be predicted by the compiled engine."""
    name = _qualified(estimator)
    if name not in FORESTS | BOOSTING:
        return False
    if getattr(estimator, "n_outputs_", 1) != 1:  # fitted on several targets at once
        return False
    if name in BOOSTING:  # the initial prediction must be the same for every pixel
        init = estimator.get_params(deep=False).get("init")
        return init is None or init == "zero"
    return True


def _threads(estimator: Any) -> int:
    """scikit-learn's thread count for this estimator (``n_jobs``; None: 1)."""
    n_jobs = estimator.get_params(deep=False).get("n_jobs")
    return max(int(joblib.effective_n_jobs(n_jobs)), 1)


def _flat_trees(estimator: Any) -> tuple[FlatTrees, int]:
    """The estimator's trees laid out for the kernel, and the number of output columns."""
    if _qualified(estimator) in BOOSTING:
        stages = estimator.estimators_  # (stages, trees per stage): tree k adds to column k
        trees = [tree.tree_ for row in stages for tree in row]
        columns = [k for _ in range(stages.shape[0]) for k in range(stages.shape[1])]
        values = [tree.value[:, 0, :1] for tree in trees]
        return flatten(trees, values, columns, float(estimator.learning_rate)), stages.shape[1]
    trees = [tree.tree_ for tree in estimator.estimators_]
    width = int(getattr(estimator, "n_classes_", 1))  # a regressor's leaves: one value
    values = [tree.value[:, 0, :width] for tree in trees]
    return flatten(trees, values, [0] * len(trees), 1.0), width


class CompiledForest:
    """A fitted tree ensemble that predicts through the compiled kernel, as scikit-learn does.

    ``predict_proba``, ``predict`` and ``predict_pixels``; every other attribute is the
    estimator's (``estimator``), except ``feature_names_in_``: the engine takes the features as
    an array, in the order the estimator was fitted on (the chain checks that order).
    """

    def __init__(self, estimator: Any, threads: int | None = None) -> None:
        if not supports(estimator):
            raise TypeError(f"{_qualified(estimator)} is not supported by the compiled engine")
        self.estimator = estimator
        self.threads = _threads(estimator) if threads is None else threads
        self.is_classifier = hasattr(estimator, "classes_")
        self._boosting = _qualified(estimator) in BOOSTING
        self._trees, self._columns = _flat_trees(estimator)
        self._start = self._initial_sums()

    def __reduce__(self) -> tuple[Any, ...]:
        return (CompiledForest, (self.estimator, self.threads))

    def __getattr__(self, name: str) -> Any:
        if name in ("estimator", "feature_names_in_") or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.estimator, name)

    def _initial_sums(self) -> np.ndarray:
        """What each pixel's sums start from: 0 for a forest; for boosting, scikit-learn's own
        initial raw prediction (the same for every pixel with its default initial estimator)."""
        if not self._boosting:
            return np.zeros(self._columns)
        one = np.zeros((1, int(self.estimator.n_features_in_)), dtype=np.float32)
        return np.asarray(self.estimator._raw_predict_init(one), dtype=np.float64)[0]

    # --- the sums, the one thing the kernel computes ---------------------------------------

    def _sums(self, block: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """(len(pixels), columns) sums of the trees for ``pixels`` of the float32
        (n_features, n_pixels) features: a forest's mean, boosting's raw prediction."""
        out = np.empty((pixels.shape[0], self._columns))
        out[:] = self._start
        parts = min(self.threads, max(pixels.shape[0] // MIN_ROWS_PER_THREAD, 1))
        if parts == 1:
            add_trees(self._trees, block, pixels, out)
        else:  # the kernel releases the GIL: row ranges on threads, each into its own rows
            bounds = np.linspace(0, pixels.shape[0], parts + 1).astype(int)
            with concurrent.futures.ThreadPoolExecutor(parts) as pool:
                list(
                    pool.map(
                        lambda i: add_trees(
                            self._trees,
                            block,
                            pixels[bounds[i] : bounds[i + 1]],
                            out[bounds[i] : bounds[i + 1]],
                        ),
                        range(parts),
                    )
                )
        if not self._boosting:
            out /= len(self.estimator.estimators_)
        return out

    def _from_sums(self, sums: np.ndarray, probabilities: bool) -> np.ndarray:
        """scikit-learn's predict_proba (``probabilities``) or predict from the sums."""
        if not self._boosting:
            if not self.is_classifier:
                return sums[:, 0]
            if probabilities:
                return sums
            return np.asarray(self.estimator.classes_).take(np.argmax(sums, axis=1), axis=0)
        raw = sums.ravel() if sums.shape[1] == 1 else sums  # as decision_function returns it
        if not self.is_classifier:
            return raw
        if probabilities:
            return np.asarray(self.estimator._loss.predict_proba(raw))
        encoded = (raw >= 0).astype(int) if raw.ndim == 1 else np.argmax(raw, axis=1)
        return np.asarray(self.estimator.classes_)[encoded]

    # --- scikit-learn's interface, and a block's pixels -------------------------------------

    def _predict(self, features: Any, probabilities: bool) -> np.ndarray:
        # float32 as scikit-learn's trees read them; C order: its transpose is the kernel's layout
        table = np.ascontiguousarray(features, dtype=np.float32)
        if table.ndim != 2 or table.shape[1] != self.estimator.n_features_in_:
            raise ValueError(
                f"X has shape {table.shape}, the model takes {self.estimator.n_features_in_} "
                "features per row"
            )
        if table.size and np.isnan(table.min()):  # where NaN goes is each node's: its walk
            rows = model_input(self.estimator, table)
            if probabilities:
                return np.asarray(self.estimator.predict_proba(rows))
            return np.asarray(self.estimator.predict(rows))
        pixels = np.arange(table.shape[0], dtype=np.int64)
        return self._from_sums(self._sums(table.T, pixels), probabilities)

    def predict_proba(self, features: Any) -> np.ndarray:
        if not self.is_classifier:
            raise AttributeError(f"{type(self.estimator).__name__} has no predict_proba")
        return self._predict(features, probabilities=True)

    def predict(self, features: Any) -> np.ndarray:
        return self._predict(features, probabilities=False)

    def predict_pixels(self, block: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (a classifier) or values (a regressor) of ``pixels`` (flat
        indices, C order, of pixels whose features are all finite) of a (n_features, h, w)
        block, read in place."""
        planes = np.ascontiguousarray(block, dtype=np.float32)  # scikit-learn's cast
        planes = planes.reshape(planes.shape[0], -1)  # a view of the planes
        sums = self._sums(planes, np.asarray(pixels, dtype=np.int64))
        return self._from_sums(sums, probabilities=self.is_classifier)


def compiled_or_none(estimator: Any) -> CompiledForest | None:
    """The compiled predictor of a fitted estimator; None where scikit-learn must predict."""
    return CompiledForest(estimator) if supports(estimator) else None


def unwrap(model: Any) -> Any:
    """The scikit-learn estimator behind a compiled predictor (the model itself otherwise): what
    is saved and recoded, since a predictor is rebuilt from its estimator when loaded."""
    return model.estimator if isinstance(model, CompiledForest) else model


def load_kernels() -> None:
    """Load the tree kernels (a worker's warm-up: ``sitsflow warm`` compiled them)."""
    from pipeline.learn import trees

    trees.load_kernels()
