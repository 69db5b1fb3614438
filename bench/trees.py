"""Tree-ensemble inference: sitsflow's compiled kernel against scikit-learn's own predict_proba.

    python -m bench.trees              # 500,000 pixels, forests of 100 trees
    python -m bench.trees --quick      # 50,000 pixels: a smoke run
    python -m bench.trees --pixels 1000000 --json out.json

Data: the real Slovenia Sentinel-2 patch (eo-learn, tests/data), gap-filled onto the 2017
10-day grid (37 NDVI features, ``bench.predict``). Pixels to predict: blends of two real
pixels at a random weight, so that every pixel is new to the trees. Two random forests of 100
trees, the two ends of what a map uses: one grown on 700 labelled pixels (small trees, the size
of ``bench.chain``'s) and one on every labelled pixel (fully grown, large trees).

Each engine predicts the same pixels in the same process on one thread: scikit-learn's
``predict_proba`` (``n_jobs=1``, the baseline), sitsflow's kernel (``CompiledForest``), and ONNX
Runtime through skl2onnx when they are installed (the engine sitsflow used before: design record
0010). It prints CPU seconds, each engine's ratio to scikit-learn, the time to lay the forest
out, and whether the probabilities equal scikit-learn's bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.predict import CLASSES, slovenia_stack


def _cpu(call: Any) -> tuple[float, Any]:
    started = time.process_time()
    found = call()
    return time.process_time() - started, found


def _onnx(estimator: Any) -> Any | None:
    """A predict_proba through ONNX Runtime (one thread), or None where it is not installed."""
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx
    except ImportError:
        return None
    sample = np.zeros((1, estimator.n_features_in_), dtype=np.float32)
    model = to_onnx(estimator, sample, options={id(estimator): {"zipmap": False}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    name, output = session.get_inputs()[0].name, session.get_outputs()[1].name
    return lambda table: session.run([output], {name: table})[0]


def measure(name: str, estimator: Any, table: np.ndarray) -> dict[str, Any]:
    from pipeline.learn.compiled import CompiledForest

    estimator.set_params(n_jobs=1)
    result: dict[str, Any] = {
        "forest": name,
        "nodes": int(sum(tree.tree_.node_count for tree in estimator.estimators_)),
        "pixels": int(table.shape[0]),
    }
    result["sklearn_cpu_s"], expected = _cpu(lambda: estimator.predict_proba(table))
    started = time.perf_counter()
    kernel = CompiledForest(estimator)
    result["layout_s"] = time.perf_counter() - started
    kernel.predict_proba(table[:8])  # kernels loaded (compiled at install)
    result["kernel_cpu_s"], found = _cpu(lambda: kernel.predict_proba(table))
    result["kernel_bit_equal"] = bool(np.array_equal(found, expected))
    onnx = _onnx(estimator)
    if onnx is not None:
        onnx(table[:8])
        result["onnx_cpu_s"], other = _cpu(lambda: onnx(table))
        result["onnx_max_difference"] = float(np.abs(other - expected).max())
    return result


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| forest | nodes | pixels | scikit-learn CPU s | sitsflow kernel CPU s (ratio) "
        "| ONNX Runtime CPU s (ratio) | layout | kernel bit-equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = r["sklearn_cpu_s"]
        onnx = (
            f"{r['onnx_cpu_s']:.2f} ({base / r['onnx_cpu_s']:.1f}x)"
            if "onnx_cpu_s" in r
            else "not installed"
        )
        lines.append(
            f"| {r['forest']} | {r['nodes']:,} | {r['pixels']:,} | {base:.2f} | "
            f"{r['kernel_cpu_s']:.2f} ({base / r['kernel_cpu_s']:.1f}x) | {onnx} | "
            f"{1000 * r['layout_s']:.0f} ms | {'yes' if r['kernel_bit_equal'] else 'NO'} |"
        )
    return "\n".join(lines)


def measure_all(pixels: int) -> list[dict[str, Any]]:
    """Both forests on ``pixels`` blended pixels (see the module's doc)."""
    from sklearn.ensemble import RandomForestClassifier

    stack, labels, _ = slovenia_stack()
    table = stack.reshape(stack.shape[0], -1).T.astype(np.float32)
    labelled = np.flatnonzero(np.isin(labels.ravel(), CLASSES))
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, len(table), (2, pixels))
    weight = rng.random((pixels, 1), dtype=np.float32)
    blends = np.ascontiguousarray(table[first] * weight + table[second] * (1 - weight))

    results = []
    for name, rows in (
        ("700 labelled px", rng.choice(labelled, 700, replace=False)),
        (f"all {len(labelled):,} labelled px", labelled),
    ):
        forest = RandomForestClassifier(n_estimators=100, random_state=0)
        forest.fit(table[rows], labels.ravel()[rows])
        results.append(measure(name, forest, blends))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixels", type=int, default=500_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = measure_all(50_000 if args.quick else args.pixels)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["kernel_bit_equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
