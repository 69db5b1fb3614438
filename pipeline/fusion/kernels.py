"""Decision fusion of several class maps, per pixel, in pure numpy (no I/O).

Inputs are ``labels`` and ``confidence`` of shape ``(S, ...)``: one layer per source (class codes,
and the source's confidence in percent), on the same pixels. A pixel where a source has
``nodata`` (or a code outside ``classes``) carries no evidence from that source; a pixel where
every source has no-data stays no-data. Every rule is per pixel, so fusing a map chunk by chunk
gives the same bytes as fusing it whole.

Majority vote
    Each source with a label votes for it; the class with most votes wins. Ties go to the class
    whose voters have the larger summed confidence, then to the smaller class code. The fused
    confidence is the share of the voting sources that agree with the winner (percent).

Dempster-Shafer (the construction of the Orfeo ToolBox ``FusionOfClassifications`` application,
``method dempstershafer``, after Xu, Krzyzak and Suen, IEEE SMC 22(3), 1992)
    A source that labels a pixel ``a`` puts mass ``p = mob(a)`` on the singleton ``{a}`` and
    ``1 - p`` on its complement ``Θ \\ {a}`` (no mass on ``Θ``), where ``mob`` comes from the
    source's validation confusion matrix (:func:`masses_of`; rows reference, columns map):
    ``precision`` (user's accuracy, ``n_aa / Σ_i n_ia``, OTB's default), ``recall`` (producer's
    accuracy) or ``accuracy`` (overall accuracy, the same for every class). The sources are
    combined by Dempster's rule (conjunctive, normalised by ``1 - K``, ``K`` the conflict).
    For these mass functions the rule has a closed form: with ``S_c`` the sources proposing
    ``c`` and ``L`` the proposed classes,

        m({c}) ∝ Π_{s∈S_c} p_s · Π_{s∉S_c} (1 - p_s)      for c in L
        m(Θ \\ L) ∝ Π_s (1 - p_s)                          when L is not every class

    (every other choice of focal elements intersects to the empty set), normalised to sum 1.
    The decision is the class of largest belief ``Bel({c})`` (``m({c})``, plus ``m(Θ \\ L)``
    when ``Θ \\ L = {c}``); ties are broken as in the vote. The fused confidence is that belief
    (percent). Total conflict (two sources of mass 1 that disagree) leaves the rule undefined:
    there the vote decides, with confidence 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Mob = Literal["precision", "recall", "accuracy"]
MOBS: tuple[Mob, ...] = ("precision", "recall", "accuracy")


def masses_of(
    confusion: np.ndarray, source_classes: Sequence[int], classes: Sequence[int], mob: Mob
) -> np.ndarray:
    """One source's mass of belief per class of ``classes`` (float64, in [0, 1]).

    ``confusion`` is the source's validation confusion matrix over ``source_classes`` (rows:
    reference, columns: map). A class the source never labels in validation (an empty column
    for precision, an empty row for recall, or a class missing from its matrix) gets the
    source's overall accuracy: its evidence is then as good as the source is on average.
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    total = matrix.sum()
    overall = float(np.trace(matrix) / total) if total > 0 else 0.0
    out = np.full(len(classes), overall, dtype=np.float64)
    if mob == "accuracy":
        return out
    position = {int(c): i for i, c in enumerate(source_classes)}
    counts = matrix.sum(axis=0) if mob == "precision" else matrix.sum(axis=1)
    for k, code in enumerate(classes):
        i = position.get(int(code))
        if i is not None and counts[i] > 0:
            out[k] = matrix[i, i] / counts[i]
    return out


def _indices(labels: np.ndarray, classes: np.ndarray, nodata: int | float) -> np.ndarray:
    """Each label's position in ``classes`` (sorted), -1 for no-data and unknown codes."""
    position = np.searchsorted(classes, labels)
    position = np.clip(position, 0, len(classes) - 1)
    known = (classes[position] == labels) & (labels != nodata)
    return np.where(known, position, -1)


def _winner(score: np.ndarray, confidence_sum: np.ndarray) -> np.ndarray:
    """The class index of the largest score; ties to the larger summed confidence, then to the
    first class (``score`` and ``confidence_sum``: (K, N))."""
    top = score.max(axis=0)
    tied = score == top[None, :]
    tie_break = np.where(tied, confidence_sum, -1.0)
    return np.asarray(tie_break.argmax(axis=0))


def _votes(index: np.ndarray, confidence: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Votes and summed confidence per class: (K, N) each."""
    votes = np.zeros((k, index.shape[1]), dtype=np.float64)
    summed = np.zeros_like(votes)
    for s in range(index.shape[0]):
        ok = index[s] >= 0
        cols = np.nonzero(ok)[0]
        np.add.at(votes, (index[s, ok], cols), 1.0)
        np.add.at(summed, (index[s, ok], cols), confidence[s, ok])
    return votes, summed


def _prepare(
    labels: np.ndarray, confidence: np.ndarray, classes: Sequence[int], nodata: int | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    labels = np.asarray(labels)
    if labels.ndim < 2 or labels.shape[0] < 1:
        raise ValueError(f"labels must be (sources, ...), got shape {labels.shape}")
    shape = labels.shape[1:]
    codes = np.asarray(sorted(int(c) for c in classes), dtype=np.int64)
    flat = labels.reshape(labels.shape[0], -1).astype(np.int64)
    index = _indices(flat, codes, nodata)
    conf = np.asarray(confidence, dtype=np.float64).reshape(flat.shape)
    conf = np.where(index >= 0, np.nan_to_num(conf), 0.0)
    return index, conf, codes, shape


def majority_vote(
    labels: np.ndarray,
    confidence: np.ndarray,
    classes: Sequence[int],
    nodata: int | float,
) -> tuple[np.ndarray, np.ndarray]:
    """The fused labels (``labels.dtype``) and confidence (uint8 percent, 255 where no-data)."""
    index, conf, codes, shape = _prepare(labels, confidence, classes, nodata)
    votes, summed = _votes(index, conf, len(codes))
    voters = (index >= 0).sum(axis=0)
    best = _winner(votes, summed)
    out = np.where(voters > 0, codes[best], nodata).astype(np.asarray(labels).dtype)
    share = np.take_along_axis(votes, best[None, :], 0)[0] / np.maximum(voters, 1)
    percent = np.where(voters > 0, np.round(share * 100), 255).astype(np.uint8)
    return out.reshape(shape), percent.reshape(shape)


def dempster_shafer_beliefs(index: np.ndarray, masses: np.ndarray, k: int) -> np.ndarray:
    """``Bel({c})`` of every class, (K, N), from each source's class index (S, N; -1: no
    evidence) and its masses per class (S, K). NaN where the sources conflict totally."""
    n = index.shape[1]
    ok = index >= 0
    # p_s at each pixel: the mass source s gives its own label there (1 - p on the complement).
    p = np.where(ok, np.take_along_axis(masses, np.maximum(index, 0), axis=1), 0.0)
    q = np.where(ok, 1.0 - p, 1.0)  # a silent source multiplies by 1 (vacuous evidence)
    everyone_else = np.prod(q, axis=0)  # Π_s (1 - p_s): the mass left on Θ \ L
    unnormalised = np.zeros((k, n), dtype=np.float64)
    proposed = np.zeros((k, n), dtype=bool)
    for c in range(k):
        mine = index == c
        proposed[c] = mine.any(axis=0)
        factors = np.where(mine, p, q)
        unnormalised[c] = np.where(proposed[c], np.prod(factors, axis=0), 0.0)
    n_proposed = proposed.sum(axis=0)
    rest = k - n_proposed
    total = unnormalised.sum(axis=0) + np.where(rest > 0, everyone_else, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        belief = unnormalised / total[None, :]
        # The one class nobody proposed holds the mass of Θ \ L as a singleton.
        lone = (rest == 1)[None, :] & ~proposed
        belief = belief + np.where(lone, (everyone_else / total)[None, :], 0.0)
    belief[:, total <= 0] = np.nan
    return belief


def dempster_shafer(
    labels: np.ndarray,
    confidence: np.ndarray,
    masses: np.ndarray,
    classes: Sequence[int],
    nodata: int | float,
) -> tuple[np.ndarray, np.ndarray]:
    """The fused labels (``labels.dtype``) and belief of the fused label (uint8 percent, 255
    where no-data). ``masses``: (S, K), each source's mass of belief per class of ``classes``
    (sorted, as :func:`masses_of` gives them)."""
    index, conf, codes, shape = _prepare(labels, confidence, classes, nodata)
    masses = np.asarray(masses, dtype=np.float64)
    if masses.shape != (index.shape[0], len(codes)):
        raise ValueError(
            f"masses have shape {masses.shape}, expected {(index.shape[0], len(codes))} "
            "(one row per source, one column per class)"
        )
    voters = (index >= 0).sum(axis=0)
    belief = dempster_shafer_beliefs(index, masses, len(codes))
    votes, summed = _votes(index, conf, len(codes))
    conflict = np.isnan(belief).any(axis=0)
    best = _winner(np.where(conflict[None, :], votes, np.nan_to_num(belief)), summed)
    top = np.take_along_axis(np.nan_to_num(belief), best[None, :], 0)[0]
    out = np.where(voters > 0, codes[best], nodata).astype(np.asarray(labels).dtype)
    percent = np.where(voters > 0, np.round(np.clip(top, 0, 1) * 100), 255).astype(np.uint8)
    return out.reshape(shape), percent.reshape(shape)
