"""An external model's classes are matched with the reference's by name, not by code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from pipeline.errors import ModelError
from pipeline.learn.contract import ModelContract
from pipeline.learn.external import class_code_map, recode_classes, reference_class_names
from pipeline.model import ClassInfo

# As `sitsflow train` numbers them: 1..K in sorted name order.
MODEL_NAMES = {1: "cultivated land", 2: "forest", 3: "water"}
# The reference's own codes, in another order.
REFERENCE = {10: "forest", 20: "water", 30: "cultivated land"}


def _model() -> tuple[RandomForestClassifier, ModelContract]:
    rng = np.random.default_rng(0)
    features = pd.DataFrame(rng.normal(size=(60, 2)), columns=["s2_ndvi_t00", "s2_ndvi_t01"])
    labels = np.repeat([1, 2, 3], 20)
    features.iloc[:, 0] += labels * 3  # separable
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels)
    contract = ModelContract(
        "sklearn.ensemble.RandomForestClassifier",
        {},
        tuple(features.columns),
        (1, 2, 3),
        training={"class_names": {str(k): v for k, v in MODEL_NAMES.items()}},
    )
    return model, contract


def test_classes_in_another_order_are_matched_by_name() -> None:
    model, contract = _model()
    mapping = class_code_map(contract, REFERENCE)
    assert mapping == {1: 30, 2: 10, 3: 20}
    rows = pd.DataFrame([[3.0, 0.0], [6.0, 0.0], [9.0, 0.0]], columns=list(contract.feature_names))
    before = model.predict(rows)
    model, recoded = recode_classes(model, contract, mapping)
    assert [mapping[int(c)] for c in before] == model.predict(rows).tolist() == [30, 10, 20]
    assert recoded.classes == (30, 10, 20)
    assert recoded.training["class_names"] == {
        "30": "cultivated land",
        "10": "forest",
        "20": "water",
    }


def test_names_match_whatever_their_case_and_a_model_only_class_keeps_its_name() -> None:
    _, contract = _model()
    mapping = class_code_map(contract, {1: "Forest", 2: " Water"})
    assert mapping == {1: 4, 2: 1, 3: 2}  # cultivated land, only the model's: a free code


def test_a_mismatch_is_refused_with_both_lists() -> None:
    _, contract = _model()
    with pytest.raises(ModelError) as error:
        class_code_map(contract, {1: "forest", 2: "grassland"})
    message = str(error.value)
    assert "1=cultivated land, 2=forest, 3=water" in message  # the model's
    assert "1=forest, 2=grassland" in message  # the reference's
    assert "['grassland']" in message and "model.path" in message


def test_without_names_on_either_side_codes_are_compared() -> None:
    _, contract = _model()
    assert class_code_map(contract, {}) == {1: 1, 2: 2, 3: 3}
    assert reference_class_names([ClassInfo(1, "1"), ClassInfo(2, "2")]) == {}
    assert reference_class_names([ClassInfo(1, "forest")]) == {1: "forest"}
