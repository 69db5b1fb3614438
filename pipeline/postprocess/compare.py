"""The raw and the post-processed map scored side by side on the same validation pixels: the
pixels where both maps have a class (a pixel one of them leaves unmapped is left out of both),
so a difference of accuracy is the post-processing's and nothing else's."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.model import ClassInfo


def side_by_side(
    reference: np.ndarray,
    raw: np.ndarray,
    processed: np.ndarray,
    nodata: int | float,
    classes: Sequence[int],
) -> dict[str, Any]:
    """Metrics of the raw and the post-processed labels at the same validation pixels, and how
    many of those pixels post-processing changed."""
    from pipeline.validate.metrics import classification_metrics

    both = (raw != nodata) & (processed != nodata)
    reference = np.asarray(reference)[both].astype(np.int64)
    raw, processed = raw[both].astype(np.int64), processed[both].astype(np.int64)
    codes = sorted(set(classes) | set(reference.tolist()))
    return {
        "pixels": int(both.sum()),
        "changed": int((raw != processed).sum()),
        "raw": classification_metrics(reference, raw, codes).to_dict(),
        "postprocessed": classification_metrics(reference, processed, codes).to_dict(),
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def comparison_html(scores: dict[str, Any], legend: Sequence[ClassInfo], title: str) -> str:
    """A small HTML page: overall accuracy, kappa, macro F1 and each class's F1, raw beside
    post-processed, with the class colours of the legend."""
    raw, post = scores["raw"], scores["postprocessed"]
    names = {c.code: c for c in legend}
    rows = [
        f"<tr><th>{label}</th><td>{_pct(raw[key])}</td><td>{_pct(post[key])}</td></tr>"
        for label, key in (
            ("overall accuracy (%)", "overall_accuracy"),
            ("kappa (x 100)", "kappa"),
            ("macro F1 (x 100)", "macro_f1"),
        )
    ]
    for code in raw["classes"]:
        info = names.get(code, ClassInfo(code, str(code)))
        swatch = f'<span style="background:{info.color};padding:0 0.7em;margin-right:0.4em"></span>'
        rows.append(
            f"<tr><th>{swatch}F1 {html.escape(info.name)} ({code})</th>"
            f"<td>{_pct(raw['f1'][str(code)])}</td><td>{_pct(post['f1'][str(code)])}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:0.2em 0.8em;"
        "text-align:right}th{text-align:left}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>The same {scores['pixels']} validation pixels scored on both maps; "
        f"post-processing changed the class of {scores['changed']} of them.</p>"
        "<table><tr><th></th><th>raw map</th><th>post-processed map</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )
