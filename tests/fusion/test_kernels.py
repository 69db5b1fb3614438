"""Fusion kernels: masses and Dempster's rule against hand computations, the vote's tie rule,
chunked equals whole, and a fusion that beats each of two sources whose errors differ."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.fusion.kernels import (
    dempster_shafer,
    dempster_shafer_beliefs,
    majority_vote,
    masses_of,
)

CLASSES = (1, 2, 3)


def test_masses_are_precision_recall_or_accuracy_of_the_confusion_matrix() -> None:
    # rows: reference 1, 2, 3; columns: map 1, 2, 3
    confusion = np.array([[8, 2, 0], [1, 6, 1], [1, 2, 9]])
    # precision of 1 = 8 / (8 + 1 + 1); of 2 = 6 / (2 + 6 + 2); of 3 = 9 / (0 + 1 + 9)
    assert masses_of(confusion, CLASSES, CLASSES, "precision") == pytest.approx([0.8, 0.6, 0.9])
    # recall of 1 = 8 / 10; of 2 = 6 / 8; of 3 = 9 / 12
    assert masses_of(confusion, CLASSES, CLASSES, "recall") == pytest.approx([0.8, 0.75, 0.75])
    assert masses_of(confusion, CLASSES, CLASSES, "accuracy") == pytest.approx([23 / 30] * 3)
    # a class the source never maps (here 4) gets its overall accuracy
    assert masses_of(confusion, CLASSES, (1, 4), "precision") == pytest.approx([0.8, 23 / 30])


def _dempster(masses: list[dict[frozenset[int], float]]) -> dict[frozenset[int], float]:
    """Dempster's rule written out over focal sets: the textbook definition, for checking."""
    combined: dict[frozenset[int], float] = {}
    for choice in itertools.product(*(m.items() for m in masses)):
        inter = frozenset.intersection(*(s for s, _ in choice))
        weight = float(np.prod([w for _, w in choice]))
        combined[inter] = combined.get(inter, 0.0) + weight
    conflict = combined.pop(frozenset(), 0.0)
    return {s: w / (1 - conflict) for s, w in combined.items()}


def test_dempster_shafer_beliefs_match_a_hand_computation() -> None:
    # source 1 says class 1 (precision 0.8), source 2 says class 2 (precision 0.6), of 1, 2, 3:
    # m({1}) ∝ 0.8 * 0.4 = 0.32, m({2}) ∝ 0.2 * 0.6 = 0.12, m({3}) = m(Θ \ {1, 2}) ∝ 0.2 * 0.4
    # = 0.08; normalised by 0.52.
    masses = np.array([[0.8, 0.5, 0.5], [0.5, 0.6, 0.5]])
    index = np.array([[0], [1]])
    belief = dempster_shafer_beliefs(index, masses, 3)[:, 0]
    assert belief == pytest.approx([0.32 / 0.52, 0.12 / 0.52, 0.08 / 0.52])
    labels, percent = dempster_shafer(np.array([[1], [2]]), np.zeros((2, 1)), masses, CLASSES, 0)
    assert labels.tolist() == [1] and percent.tolist() == [62]


@pytest.mark.parametrize(
    "proposed",
    [(0, 0), (0, 1), (0, 1, 2), (2, 2, 1), (0, 1, 3), (3, 3, 3), (0, -1, 1)],
)
def test_closed_form_is_dempsters_rule(proposed: tuple[int, ...]) -> None:
    k = 4
    rng = np.random.default_rng(len(proposed) * 7 + sum(proposed))
    masses = rng.uniform(0.3, 0.95, size=(len(proposed), k))
    theta = frozenset(range(k))
    written = [
        {frozenset([a]): masses[s, a], theta - {a}: 1 - masses[s, a]}
        for s, a in enumerate(proposed)
        if a >= 0
    ]
    combined = _dempster(written)
    expected = [combined.get(frozenset([c]), 0.0) for c in range(k)]
    got = dempster_shafer_beliefs(np.array(proposed)[:, None], masses, k)[:, 0]
    assert got == pytest.approx(expected)


def test_vote_ties_go_to_the_more_confident_voters_then_the_smaller_code() -> None:
    labels = np.array([[1, 1, 0, 3], [2, 2, 0, 2], [3, 1, 0, 0]])
    confidence = np.array([[40, 40, 0, 50], [90, 90, 0, 50], [60, 10, 0, 0]])
    out, percent = majority_vote(labels, confidence, CLASSES, 0)
    # pixel 0: one vote each, 2 is the most confident; pixel 1: 1 has two votes; pixel 2:
    # no source; pixel 3: 3 and 2 tie on votes and confidence, the smaller code wins
    assert out.tolist() == [2, 1, 0, 2]
    assert percent.tolist() == [33, 67, 255, 50]


def _constructed(n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference and two sources whose errors differ: A mistakes a fifth of class 3 for 1
    (clouds, say), B 30 % of class 1 for 2; each is right where the other errs."""
    rng = np.random.default_rng(5)
    truth = rng.choice(np.array(CLASSES), size=n)
    a, b = truth.copy(), truth.copy()
    wrong_a = (truth == 3) & (rng.random(n) < 0.2)
    wrong_b = (truth == 1) & (rng.random(n) < 0.3)
    a[wrong_a] = 1
    b[wrong_b] = 2
    return truth, a, b


def _confusion(truth: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    out = np.zeros((3, 3), dtype=np.int64)
    np.add.at(out, (truth - 1, mapped - 1), 1)
    return out


def test_fusion_of_two_sources_with_different_errors_scores_at_least_the_better() -> None:
    truth, a, b = _constructed()
    half = len(truth) // 2  # masses from one half (validation), scores on the other
    masses = np.stack(
        [
            masses_of(_confusion(truth[:half], s[:half]), CLASSES, CLASSES, "precision")
            for s in (a, b)
        ]
    )
    labels = np.stack([a[half:], b[half:]])
    confidence = np.full(labels.shape, 80)
    fused, _ = dempster_shafer(labels, confidence, masses, CLASSES, 0)
    accuracy = {
        name: float((x == truth[half:]).mean()) for name, x in (("a", a[half:]), ("b", b[half:]))
    }
    fused_accuracy = float((fused == truth[half:]).mean())
    assert fused_accuracy >= max(accuracy.values())
    assert fused_accuracy > 0.99  # every error of one source is undone by the other
    # the vote, with errors less confident, does as well
    confidence = np.where(labels == truth[half:][None, :], 80, 40)
    voted, _ = majority_vote(labels, confidence, CLASSES, 0)
    assert float((voted == truth[half:]).mean()) >= max(accuracy.values())


def test_chunked_equals_whole() -> None:
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([0, 1, 2, 3]), size=(3, 40, 50)).astype(np.uint8)
    confidence = rng.integers(0, 101, size=labels.shape).astype(np.uint8)
    masses = rng.uniform(0.2, 1.0, size=(3, 3))
    masses[0, 1] = 1.0  # a certain source: total conflict somewhere
    masses[1, 2] = 1.0
    whole = dempster_shafer(labels, confidence, masses, CLASSES, 0)
    voted = majority_vote(labels, confidence, CLASSES, 0)
    for rows in (slice(0, 17), slice(17, 40)):
        for cols in (slice(0, 23), slice(23, 50)):
            part = dempster_shafer(
                labels[:, rows, cols], confidence[:, rows, cols], masses, CLASSES, 0
            )
            assert np.array_equal(part[0], whole[0][rows, cols])
            assert np.array_equal(part[1], whole[1][rows, cols])
            vpart = majority_vote(labels[:, rows, cols], confidence[:, rows, cols], CLASSES, 0)
            assert np.array_equal(vpart[0], voted[0][rows, cols])
    assert whole[0].dtype == np.uint8 and whole[0].shape == (40, 50)
