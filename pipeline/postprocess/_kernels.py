"""The compiled kernels of post-processing (numba), isolated from planning and I/O.

Every kernel computes each output pixel from its own neighbourhood only, in a fixed order of
operations, so a pixel gets the same bits whether its block is the whole map or a chunk read
with its halo: that is what makes chunked processing exact, not merely close.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# --- Bayesian smoothing ---------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _select_top(buf: np.ndarray, n: int, k: int) -> None:
    """Reorder ``buf[:n]`` so that its ``k`` largest values are ``buf[:k]`` (quickselect with a
    median-of-three pivot; deterministic for a given input order)."""
    lo, hi = 0, n - 1
    target = k - 1
    while lo < hi:
        mid = (lo + hi) // 2
        a, b, c = buf[lo], buf[mid], buf[hi]
        if (a >= b) == (a <= c):
            pivot = a
        elif (b >= a) == (b <= c):
            pivot = b
        else:
            pivot = c
        i, j = lo, hi
        while i <= j:
            while buf[i] > pivot:
                i += 1
            while buf[j] < pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return


@numba.njit(cache=True, nogil=True)
def bayes_smooth(
    logits: np.ndarray, window: int, fraction: float, smoothness: np.ndarray
) -> np.ndarray:
    """sits' Bayesian smoother on a (K, H + 2h, W + 2h) block of logits (NaN: no-data), h =
    window // 2; returns the (K, H, W) posterior logits of the core (NaN where the centre is
    no-data). See pipeline.postprocess.smooth for the formula."""
    n_classes, rows, cols = logits.shape
    h = window // 2
    out_rows, out_cols = rows - 2 * h, cols - 2 * h
    out = np.empty((n_classes, out_rows, out_cols), dtype=np.float64)
    buf = np.empty(window * window, dtype=np.float64)
    for k in range(n_classes):
        tau = smoothness[k]
        for i in range(out_rows):
            for j in range(out_cols):
                x0 = logits[k, i + h, j + h]
                if math.isnan(x0):
                    out[k, i, j] = np.nan
                    continue
                n = 0
                for wi in range(window):
                    for wj in range(window):
                        v = logits[k, i + wi, j + wj]
                        if not math.isnan(v):
                            buf[n] = v
                            n += 1
                used = math.ceil(fraction * n)
                if used < n:
                    _select_top(buf, n, used)
                total = 0.0
                for t in range(used):
                    total += buf[t]
                m0 = total / used
                s0 = 0.0
                if used > 1:
                    for t in range(used):
                        d = buf[t] - m0
                        s0 += d * d
                    s0 /= used - 1
                w = s0 / (s0 + tau)
                out[k, i, j] = w * x0 + (1.0 - w) * m0
    return out


# --- connected regions ----------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True, nogil=True, inline="always")
def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@numba.njit(cache=True, nogil=True)
def label_regions(classes: np.ndarray, eight: bool) -> tuple[np.ndarray, int]:
    """Connected regions of equal class index (``classes`` int32, -1: no-data, never a region):
    int32 labels 1..n numbered in raster order of each region's first pixel, 0 for no-data.

    Two passes: provisional labels copied from an already-seen neighbour of the same class
    (union-find over provisional labels only, far fewer than pixels), then final numbers."""
    rows, cols = classes.shape
    provisional = np.zeros((rows, cols), dtype=np.int32)
    parent = np.zeros(rows * cols + 1, dtype=np.int32)
    next_label = 1
    for i in range(rows):
        for j in range(cols):
            c = classes[i, j]
            if c < 0:
                continue
            label = 0
            if j > 0 and classes[i, j - 1] == c:
                label = provisional[i, j - 1]
            if i > 0:
                up = provisional[i - 1, j] if classes[i - 1, j] == c else 0
                if eight:
                    if j > 0 and classes[i - 1, j - 1] == c:
                        diag = provisional[i - 1, j - 1]
                        if label == 0:
                            label = diag
                        elif diag != label:
                            _union(parent, label, diag)
                    if j + 1 < cols and classes[i - 1, j + 1] == c:
                        diag = provisional[i - 1, j + 1]
                        if label == 0:
                            label = diag
                        elif diag != label:
                            _union(parent, label, diag)
                if up != 0:
                    if label == 0:
                        label = up
                    elif up != label:
                        _union(parent, label, up)
            if label == 0:
                label = next_label
                parent[label] = label
                next_label += 1
            provisional[i, j] = label
    final = np.zeros(next_label, dtype=np.int32)
    n = 0
    for i in range(rows):
        for j in range(cols):
            label = provisional[i, j]
            if label == 0:
                continue
            root = _find(parent, label)
            if final[root] == 0:
                n += 1
                final[root] = n
            provisional[i, j] = final[root]
    return provisional, n


@numba.njit(cache=True, nogil=True)
def first_pixels(labels: np.ndarray, n: int) -> np.ndarray:
    """The flat index of each label's first pixel (labels 1..n, numbered in raster order)."""
    first = np.empty(n, dtype=np.int64)
    flat = labels.ravel()
    seen = 0
    for p in range(flat.size):
        if flat[p] > seen:  # labels appear in increasing order of their first pixel
            first[seen] = p
            seen += 1
    return first


@numba.njit(cache=True, nogil=True)
def lookup(labels: np.ndarray, table: np.ndarray, nodata: int) -> tuple[np.ndarray, bool]:
    """``table[label]`` for each label of an unsigned integer map (one pass), -1 for
    ``nodata``; and whether a label maps to -2 (a code that is not a class)."""
    rows, cols = labels.shape
    out = np.empty((rows, cols), dtype=np.int32)
    unknown = False
    for i in range(rows):
        for j in range(cols):
            value = labels[i, j]
            if value == nodata:
                out[i, j] = -1
            else:
                k = table[value]
                out[i, j] = k
                if k == -2:
                    unknown = True
    return out, unknown


@numba.njit(cache=True, nogil=True)
def codes_of(index: np.ndarray, codes: np.ndarray, nodata: int, out: np.ndarray) -> np.ndarray:
    """The class code of each class index into ``out`` (its dtype is the map's), ``nodata``
    for -1."""
    rows, cols = index.shape
    for i in range(rows):
        for j in range(cols):
            k = index[i, j]
            out[i, j] = nodata if k < 0 else codes[k]
    return out


# --- majority filter ------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def majority_filter(classes: np.ndarray, radius: int, n_classes: int) -> np.ndarray:
    """Each valid pixel takes the most frequent class among the valid pixels of its (2r+1)²
    window (pixels off the array do not count); a tie keeps the pixel's own class when it is
    among the most frequent, else the lowest class index; no-data (-1) stays no-data."""
    rows, cols = classes.shape
    out = np.empty_like(classes)
    counts = np.zeros(n_classes, dtype=np.int32)
    for i in range(rows):
        for j in range(cols):
            own = classes[i, j]
            if own < 0:
                out[i, j] = own
                continue
            counts[:] = 0
            for a in range(max(0, i - radius), min(rows, i + radius + 1)):
                for b in range(max(0, j - radius), min(cols, j + radius + 1)):
                    c = classes[a, b]
                    if c >= 0:
                        counts[c] += 1
            best = own
            for c in range(n_classes):
                if counts[c] > counts[best]:
                    best = c
            out[i, j] = best
    return out


# --- sieve to a minimum mapping unit --------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def sieve(
    classes: np.ndarray,
    mmu: int,
    eight: bool,
    n_classes: int,
    open_edges: np.ndarray,
    core: np.ndarray,
) -> tuple[np.ndarray, bool]:
    """Regions of fewer than ``mmu`` pixels take the majority class of their surrounding pixels
    (rules in pipeline.postprocess.regularize); returns the core ``[r0:r1, c0:c1]`` (``core``)
    and whether the result may differ from the whole map's (``unsure``).

    ``open_edges`` (top, bottom, left, right) marks the sides of the array that are not the map's
    edge: a region touching one may continue outside, so it counts as large. The result is
    unsure when a region that decides something (one with a core pixel, or one around a small
    region of the core) touches an open side with fewer than ``mmu`` pixels seen: its size in
    the map is unknown. Never with a halo of 2 * mmu - 2 (the module's proof).
    """
    rows, cols = classes.shape
    labels, n = label_regions(classes, eight)
    size = np.zeros(n + 1, dtype=np.int64)
    large = np.zeros(n + 1, dtype=np.bool_)
    region_class = np.full(n + 1, -1, dtype=np.int32)
    for i in range(rows):
        for j in range(cols):
            lab = labels[i, j]
            if lab != 0:
                size[lab] += 1
                region_class[lab] = classes[i, j]
    # a region on an open side may go on outside: the sides only, not a test per pixel
    if open_edges[0]:
        for j in range(cols):
            large[labels[0, j]] = True
    if open_edges[1]:
        for j in range(cols):
            large[labels[rows - 1, j]] = True
    if open_edges[2]:
        for i in range(rows):
            large[labels[i, 0]] = True
    if open_edges[3]:
        for i in range(rows):
            large[labels[i, cols - 1]] = True
    large[0] = False  # no-data is no region
    unknown = np.zeros(n + 1, dtype=np.bool_)  # touches an open side, below the unit as seen
    for lab in range(1, n + 1):
        unknown[lab] = large[lab] and size[lab] < mmu
        if size[lab] >= mmu:
            large[lab] = True
    # the small regions with a pixel in the core: only those are decided here
    r0, r1, c0, c1 = core[0], core[1], core[2], core[3]
    out = classes[r0:r1, c0:c1].copy()
    small_index = np.full(n + 1, -1, dtype=np.int64)
    n_small = 0
    unsure = False
    for i in range(r0, r1):
        for j in range(c0, c1):
            lab = labels[i, j]
            if lab != 0 and unknown[lab]:
                unsure = True
            if lab != 0 and not large[lab] and small_index[lab] < 0:
                small_index[lab] = n_small
                n_small += 1
    if n_small == 0:
        return out, unsure
    # their pixels, one list per region in one pass (they lie within mmu - 2 of the core):
    # head[s] is region s's last pixel found, after[p] the pixel found before p in its region
    reach = max(0, mmu - 2)
    a0, a1 = max(0, r0 - reach), min(rows, r1 + reach)
    b0, b1 = max(0, c0 - reach), min(cols, c1 + reach)
    head = np.full(n_small, -1, dtype=np.int64)
    after = np.empty(rows * cols, dtype=np.int64)
    for i in range(a0, a1):
        for j in range(b0, b1):
            lab = labels[i, j]
            if lab != 0 and small_index[lab] >= 0:
                s = small_index[lab]
                p = i * cols + j
                after[p] = head[s]
                head[s] = p
    # each surrounding pixel counts once per region: a stamp per pixel, region by region
    from_large = np.zeros(n_classes, dtype=np.int64)
    from_all = np.zeros(n_classes, dtype=np.int64)
    stamp = np.zeros(rows * cols, dtype=np.int32)
    di = (-1, 1, 0, 0, -1, -1, 1, 1)
    dj = (0, 0, -1, 1, -1, 1, -1, 1)
    n_dir = 8 if eight else 4
    target = np.empty(n_small, dtype=np.int32)
    for s in range(n_small):
        from_large[:] = 0
        from_all[:] = 0
        own = -1
        p = head[s]
        while p >= 0:
            i, j = p // cols, p % cols
            p = after[p]
            own = labels[i, j]
            for d in range(n_dir):
                a, b = i + di[d], j + dj[d]
                if a < 0 or a >= rows or b < 0 or b >= cols:
                    continue
                other = labels[a, b]
                q = a * cols + b
                if other == 0 or other == own or stamp[q] == s + 1:
                    continue
                stamp[q] = s + 1
                if unknown[other]:
                    unsure = True
                c = classes[a, b]
                from_all[c] += 1
                if large[other]:
                    from_large[c] += 1
        best = -1
        for c in range(n_classes):  # strictly greater: a tie goes to the lowest class index
            if from_large[c] > 0 and (best < 0 or from_large[c] > from_large[best]):
                best = c
        if best < 0:
            for c in range(n_classes):
                if from_all[c] > 0 and (best < 0 or from_all[c] > from_all[best]):
                    best = c
        target[s] = region_class[own] if best < 0 else best
    for i in range(r0, r1):
        for j in range(c0, c1):
            lab = labels[i, j]
            if lab != 0 and small_index[lab] >= 0:
                out[i - r0, j - c0] = target[small_index[lab]]
    return out, unsure


def load_kernels() -> None:
    """Load every kernel of post-processing from numba's cache (else compile it, about 5 CPU s),
    with the argument types the stages pass: int32 class indices (C order from ``class_index``,
    any order once a majority filter's margin is cut), float64 logits and smoothness. The
    install's warm step runs it, so that a first run's workers load instead of compiling."""
    classes = np.zeros((4, 4), dtype=np.int32)
    edges = np.zeros(4, dtype=np.bool_)
    labels, n = label_regions(classes, True)
    first_pixels(labels, n)
    filtered = majority_filter(classes, 1, 2)
    for index in (classes, filtered[1:, 1:]):  # C order, and a cut (any order)
        rows, cols = index.shape
        sieve(index, 2, True, 2, edges, np.array([0, rows, 0, cols], dtype=np.int64))
    for dtype in (np.uint8, np.uint16):  # the label maps' types (class codes to indices, back)
        table = np.full(np.iinfo(dtype).max + 1, -2, dtype=np.int32)
        raw = np.zeros((4, 4), dtype=dtype)
        for block in (raw, raw[1:, 1:]):  # a whole array, and a trimmed halo (any order)
            lookup(block, table, 0)
        nodata = dtype(0)  # a scalar of the map's type, as regularize passes it
        codes_of(classes, np.zeros(2, dtype=dtype), nodata, np.empty((4, 4), dtype=dtype))  # type: ignore[arg-type]
    bayes_smooth(np.zeros((2, 3, 3)), 3, 0.5, np.ones(2))
