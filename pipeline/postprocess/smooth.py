"""Bayesian spatial smoothing of class probabilities, the sits formulation.

For a pixel i and a class k with probability p_ik (K classes):

1. logit: x_ik = ln(p_ik / (S_i - p_ik)), S_i = sum_j p_ij, after p is clamped to
   [1e-6, 1 - 1e-6] (so 0 and 1 give finite logits);
2. prior from the neighbourhood: the window_size x window_size logits of class k centred on i
   (mirrored at the map's edge, the edge pixel repeated; no-data pixels left out), sorted in
   decreasing order; the first ceil(neigh_fraction * n) of the n values are kept; m_ik is their
   mean and s2_ik their sample variance (divisor n - 1; 0 when one value is kept);
3. posterior: x'_ik = w * x_ik + (1 - w) * m_ik with w = s2_ik / (s2_ik + sigma2_k), sigma2_k
   the smoothness of class k (one value for all classes, or one per class);
4. p'_ik = 1 / (1 + exp(-x'_ik)); the label is the class of the largest p'_ik (a tie goes to
   the first class in code order) and the confidence is that p'_ik. As in sits, the smoothed
   probabilities of a pixel are not renormalized to sum to 1.

A large smoothness trusts the neighbourhood more (w small); a neighbourhood of varied logits
(a border between classes) has a large s2 and keeps the pixel's own value.

Source: sits (e-sensing/sits), ``src/smooth_bayes.cpp`` (``bayes_smoother_fraction``) and
``R/api_smooth.R`` (``.smooth_fn_bayes``: the clamp, the logit and its inverse); the defaults
(window 7, fraction 0.5, smoothness 10) are those of ``sits_smooth``; the method is described in
the sits book, "Bayesian smoothing for post-processing" (Camara et al.). Where sits does not say
(its current kernel assumes no no-data), the rule here is: a no-data pixel stays no-data and
is left out of its neighbours' priors.

Chunked processing: a pixel's result depends on its window only, computed in a fixed order, so
a chunk read with a halo of window_size // 2 pixels (``halo``) gives exactly the bits of the
whole map (tested with Hypothesis on random maps and chunk sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ManifestError
from pipeline.model import Window
from pipeline.postprocess.blocks import Block, Reader, read_with_halo, trim

CLAMP = 1e-6
FIELD = "postprocess.smoothing"


@dataclass(frozen=True)
class SmoothingConfig:
    """The smoothing of ``postprocess.smoothing``: ``smoothness`` holds one value for all classes
    or one per class (in class-code order)."""

    window_size: int = 7
    neigh_fraction: float = 0.5
    smoothness: tuple[float, ...] = (10.0,)

    def __post_init__(self) -> None:
        if self.window_size < 3 or self.window_size % 2 == 0:
            raise ManifestError(
                f"window_size {self.window_size} is not an odd number of at least 3",
                fix="give an odd window size such as 5, 7 (sits' default) or 9",
                field=f"{FIELD}.window_size",
            )
        if not 0 < self.neigh_fraction <= 1:
            raise ManifestError(
                f"neigh_fraction {self.neigh_fraction} is outside (0, 1]",
                fix="give the share of the neighbourhood's highest values to keep, e.g. 0.5",
                field=f"{FIELD}.neigh_fraction",
            )
        if not self.smoothness or any(not s > 0 for s in self.smoothness):
            raise ManifestError(
                f"smoothness {list(self.smoothness)} must be one or more values above 0",
                fix="give one variance for all classes (sits' default: 10) or one per class",
                field=f"{FIELD}.smoothness",
            )

    @property
    def halo(self) -> int:
        """Pixels read around a chunk so that it is smoothed as in the whole map."""
        return self.window_size // 2

    def smoothness_of(self, n_classes: int) -> np.ndarray:
        """The smoothness of each of ``n_classes`` classes."""
        if len(self.smoothness) == 1:
            return np.full(n_classes, float(self.smoothness[0]))
        if len(self.smoothness) != n_classes:
            raise ManifestError(
                f"{len(self.smoothness)} smoothness values for {n_classes} classes",
                fix="give one value for all classes or exactly one per class",
                field=f"{FIELD}.smoothness",
            )
        return np.asarray(self.smoothness, dtype=np.float64)


def logits(probabilities: np.ndarray) -> np.ndarray:
    """(K, h, w) probabilities (NaN: no-data) -> float64 logits ln(p / (S - p)) (step 1)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), CLAMP, 1 - CLAMP)
    total = p.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(p / (total - p))


def _mirrored(data: np.ndarray, block: Block, halo: int) -> np.ndarray:
    """Pad the map's own edges of a block by mirroring (sits' rule); open sides are full."""
    r0, r1, c0, c1 = block.core
    rows, cols = data.shape[-2:]
    top = 0 if block.open[0] else halo - r0
    bottom = 0 if block.open[1] else halo - (rows - r1)
    left = 0 if block.open[2] else halo - c0
    right = 0 if block.open[3] else halo - (cols - c1)
    if not (top or bottom or left or right):
        return data
    pad = [(0, 0)] * (data.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(data, pad, mode="symmetric")


def smooth_block(block: Block, config: SmoothingConfig) -> np.ndarray:
    """The smoothed (K, h, w) float32 probabilities of a block's core (NaN: no-data); ``block``
    holds (K, H, W) probabilities read with a halo of at least ``config.halo``."""
    halo = config.halo
    trimmed = trim(block, halo)  # the read may have brought more than the halo
    padded = _mirrored(logits(trimmed.data), trimmed, halo)
    tau = config.smoothness_of(padded.shape[0])
    from pipeline.postprocess import _kernels  # numba: not when a config is only read

    posterior = _kernels.bayes_smooth(padded, config.window_size, config.neigh_fraction, tau)
    return (1.0 / (1.0 + np.exp(-posterior))).astype(np.float32)


def smooth_window(
    read: Reader, shape: tuple[int, int], window: Window, config: SmoothingConfig
) -> np.ndarray:
    """Smooth one window of a (K, H, W) probability map read by ``read`` (shape: (H, W))."""
    return smooth_block(read_with_halo(read, shape, window, config.halo), config)


def smooth(probabilities: np.ndarray, config: SmoothingConfig) -> np.ndarray:
    """Smooth a whole (K, H, W) probability map in memory (the reference pass)."""
    shape = probabilities.shape[-2:]
    window = Window(0, 0, shape[0], shape[1])
    block = Block(probabilities, window, (0, shape[0], 0, shape[1]), (False,) * 4)
    return smooth_block(block, config)


def percent_to_probability(stack: np.ndarray, nodata: int = 255) -> np.ndarray:
    """(K, h, w) percent layers of the map store (uint8) -> probabilities in [0, 1], NaN at a
    pixel where any class is no-data."""
    out = stack.astype(np.float32) / 100.0
    out[:, (stack == nodata).any(axis=0)] = np.nan
    return out


def labels_and_confidence(
    probabilities: np.ndarray, codes: Sequence[int], nodata: int, dtype: str = "uint8"
) -> tuple[np.ndarray, np.ndarray]:
    """The label (code of the largest probability; a tie: the first code) and its probability in
    percent (uint8, 255 no-data) of (K, h, w) probabilities in code order."""
    if probabilities.shape[0] != len(codes):
        raise ValueError(f"{probabilities.shape[0]} probability layers for {len(codes)} codes")
    missing = np.isnan(probabilities).any(axis=0)
    filled = np.where(np.isnan(probabilities), -1.0, probabilities)
    best = filled.argmax(axis=0)
    labels = np.asarray(codes)[best].astype(dtype)
    labels[missing] = nodata
    top = np.take_along_axis(filled, best[None], 0)[0]
    confidence = np.round(np.clip(top, 0.0, 1.0) * 100).astype(np.uint8)
    confidence[missing] = 255
    return labels, confidence
