"""Training inside a dask worker spreads a forest's trees (and a grid search's folds) over
every worker of a real multi-process cluster, and gives the model a single process gives."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from distributed import Client, get_task_stream

from pipeline.learn.config import GridSearchConfig, ModelConfig
from pipeline.learn.sklearn import train
from tests.servers.dask_cluster import dask_cluster


def _data() -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    # 30,000 samples: each batch then takes tens of milliseconds. Batches of a few ms (3,000
    # samples) stay on the worker that holds the data, which is the scheduler's right call,
    # and made this test fail one run in three; a run's training batches take seconds.
    rng = np.random.default_rng(3)
    features = rng.normal(size=(30000, 12)).astype(np.float32)
    labels = (features[:, 0] + 0.5 * features[:, 3] > 0).astype(np.int64)
    labels += 2 * (features[:, 5] > 1)
    groups = np.arange(len(labels)) // 10  # polygons of 10 pixels
    return features, labels, [f"f{i}" for i in range(12)], groups


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        ModelConfig(
            estimator="sklearn.ensemble.RandomForestClassifier", params={"n_estimators": 40}
        ),
        ModelConfig(
            estimator="sklearn.ensemble.ExtraTreesClassifier",
            params={"n_estimators": 40},
            grid_search=GridSearchConfig(param_grid={"max_depth": [3, None]}, folds=3),
        ),
    ],
    ids=["forest", "grid-search"],
)
def test_a_model_trained_on_the_cluster_is_the_model_trained_alone(spec: ModelConfig) -> None:
    features, labels, names, groups = _data()
    alone, _ = train(spec, features, labels, names, 7, groups=groups)
    with dask_cluster(n_workers=2) as cluster, Client(cluster.address) as client:
        client.wait_for_workers(2, timeout=30)
        with get_task_stream(client) as stream:
            # As a run's train unit does: the fit inside a worker.
            future = client.submit(train, spec, features, labels, names, 7, groups=groups)
            on_cluster, _ = future.result(timeout=300)
        workers = set(client.scheduler_info()["workers"])
    # The joblib batches ran as tasks of their own, on both workers.
    batches = [t for t in stream.data if "batch" in str(t["key"]).lower()]
    assert {t["worker"] for t in batches} == workers
    final = getattr(on_cluster, "best_estimator_", on_cluster)
    assert on_cluster.get_params()["n_jobs"] is None  # put back: predicts as configured
    assert final.get_params()["n_jobs"] is None
    np.testing.assert_array_equal(on_cluster.predict_proba(features), alone.predict_proba(features))
    alone_final = getattr(alone, "best_estimator_", alone)
    assert len(final.estimators_) == len(alone_final.estimators_)
    for a, b in zip(final.estimators_, alone_final.estimators_, strict=True):
        assert pickle.dumps(a.tree_.__getstate__()) == pickle.dumps(b.tree_.__getstate__())


def test_outside_a_worker_the_fit_is_unchanged() -> None:
    """No cluster, no dask backend: n_jobs stays as configured during the fit."""
    spec = ModelConfig(params={"n_estimators": 5, "n_jobs": 1})
    features, labels, names, groups = _data()
    estimator, _ = train(spec, features, labels, names, seed=7, groups=groups)
    assert estimator.get_params()["n_jobs"] == 1
