"""Patch inference against pixel inference: pixels per second of one worker thread.

    python -m bench.patch                # CPU, 1 thread, 4 chunks of 256 px, 24 dates x 4 bands
    python -m bench.patch --chunks 8 --device cuda

Each model runs in its own process (peak memory = that process's maximum resident set, the
figure a dask worker's memory limit sees) on the chain's own prediction path: the learner's
``predict_block`` on a chunk read with the learner's halo. The patch model (``utae``, its
default size: 32 px patches, stride 16, so each pixel is predicted by 4 patches) against the
pixel TempCNN (its defaults). Weights are untrained: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from typing import Any

import numpy as np

DATES = 24
BANDS = ("blue", "green", "red", "nir")


def _names() -> list[str]:
    days = [f"2020{1 + d // 2:02d}{1 + 15 * (d % 2):02d}" for d in range(DATES)]
    return [f"s2_{band}_{day}" for band in BANDS for day in days]


def _measure(kind: str, chunk: int, chunks: int, device: str, queue: Any) -> None:
    import torch

    from pipeline.learn.config import ModelConfig, PatchConfig
    from pipeline.learn.learner import PixelLearner

    torch.set_num_threads(1)
    names = _names()
    if kind == "patch":
        from pipeline.learn.patch.learner import PatchLearner, PatchModel
        from pipeline.learn.patch.train import prepare_patch_network

        config = ModelConfig(kind="torch_patch", architecture="utae", patch=PatchConfig())
        network, _layout, dims = prepare_patch_network(config, names, 8)
        patch = config.patch or PatchConfig()
        model: Any = PatchModel(
            network, np.arange(1, 9), patch.size, patch.step, device, dims=dims, params={}
        )
        learner: Any = PatchLearner()
        halo = ((patch.size - 1) // patch.step) * patch.step
    else:
        from pipeline.learn.torch.estimator import TorchModel
        from pipeline.learn.torch.train import prepare_network

        config = ModelConfig(kind="torch", architecture="tempcnn")
        network, _layout, _dims = prepare_network(config, names, 8)
        model = TorchModel(network, "classification", np.arange(1, 9), device=device)
        learner, halo = PixelLearner(), 0
    rng = np.random.default_rng(0)
    side = chunk + 2 * halo
    block = rng.random((len(names), side, side), dtype=np.float32)
    learner.predict_block(model, block, halo, "classification")  # warm-up (allocations, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    cpu = time.process_time()
    for _ in range(chunks):
        found = learner.predict_block(model, block, halo, "classification")
        assert found.probabilities is not None and found.probabilities.shape[1] == 8
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    pixels = chunks * chunk * chunk
    queue.put(
        {
            "model": "utae patches (32 px, stride 16)" if kind == "patch" else "tempcnn pixels",
            "device": device,
            "pixels": pixels,
            "seconds": round(seconds, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
            "pixels_per_second": round(pixels / seconds, 1),
            # CPU time is what a loaded machine does not distort (wall time is shared).
            "pixels_per_cpu_second": round(pixels / max(time.process_time() - cpu, 1e-9), 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "halo": halo,
        }
    )


def measure(kind: str, chunk: int = 256, chunks: int = 4, device: str = "cpu") -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(kind, chunk, chunks, device, queue))
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    return result


def run(chunk: int = 256, chunks: int = 4, device: str = "cpu") -> dict[str, Any]:
    pixel = measure("pixel", chunk, chunks, device)
    patch = measure("patch", chunk, chunks, device)
    return {
        "features": DATES * len(BANDS),
        "chunk": chunk,
        "threads": 1,
        "pixel": pixel,
        "patch": patch,
        "patch_vs_pixel_speed": round(patch["pixels_per_second"] / pixel["pixels_per_second"], 3),
        "patch_vs_pixel_cpu": round(
            patch["pixels_per_cpu_second"] / pixel["pixels_per_cpu_second"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    figures = run(args.chunk, args.chunks, args.device)
    print(json.dumps(figures, indent=2))
    print(report(figures))


def report(figures: dict[str, Any]) -> str:
    """The section's lines for the suite's report."""
    lines = [
        f"patch inference ({figures['features']} features, {figures['chunk']} px chunks, "
        f"{figures['threads']} thread):"
    ]
    for key in ("pixel", "patch"):
        f = figures[key]
        lines.append(
            f"  {f['model']:<34} {f['pixels_per_second']:>10,.0f} px/s wall, "
            f"{f['pixels_per_cpu_second']:>10,.0f} px/CPU-s, peak {f['peak_rss_mib']:,.0f} MiB "
            f"({f['device']}, halo {f['halo']})"
        )
    lines.append(
        f"  patch / pixel: {figures['patch_vs_pixel_speed']:.2f} (wall), "
        f"{figures['patch_vs_pixel_cpu']:.2f} (CPU)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
