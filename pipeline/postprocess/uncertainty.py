"""Uncertainty layers of class probabilities, per pixel (so any block gives the whole map's
values): what sits calls uncertainty maps (``sits_uncertainty``: entropy, margin).

Both are computed on the probabilities renormalized to sum to 1 at each pixel (smoothed
probabilities do not), q_k = p_k / sum_j p_j:

* entropy: -sum_k q_k ln q_k / ln K, 0 when one class has everything, 1 when all are equal
  (sits' ``C_entropy_probs``, normalized by ln K as there);
* margin: 1 - (q_(1) - q_(2)), the two largest; 0 when the winner is certain, 1 on a tie
  (sits' ``C_margin_probs``).

High values mark where the model hesitates: where new samples help most. Stored as percent
(uint8, 255 no-data) like the confidence.
"""

from __future__ import annotations

import numpy as np

PERCENT_NODATA = 255


def _normalized(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    total = p.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return p / total


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Normalized entropy (float32 in [0, 1], NaN: no-data) of (K, h, w) probabilities."""
    q = _normalized(probabilities)
    n_classes = q.shape[0]
    if n_classes < 2:
        return np.where(np.isnan(q[0]), np.nan, 0.0).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(q > 0, q * np.log(q), 0.0)
    out = -terms.sum(axis=0) / np.log(n_classes)
    out[np.isnan(q).any(axis=0)] = np.nan
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """1 - (largest - second largest) normalized probability (float32, NaN: no-data)."""
    q = _normalized(probabilities)
    if q.shape[0] < 2:
        return np.where(np.isnan(q[0]), np.nan, 0.0).astype(np.float32)
    top = -np.partition(-np.nan_to_num(q, nan=0.0), 1, axis=0)[:2]
    out = 1.0 - (top[0] - top[1])
    out[np.isnan(q).any(axis=0)] = np.nan
    return out.astype(np.float32)


def to_percent(values: np.ndarray) -> np.ndarray:
    """[0, 1] values (NaN: no-data) -> uint8 percent, 255 no-data."""
    out = np.full(values.shape, PERCENT_NODATA, dtype=np.uint8)
    ok = ~np.isnan(values)
    out[ok] = np.round(np.clip(values[ok], 0.0, 1.0) * 100).astype(np.uint8)
    return out
