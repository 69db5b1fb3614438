"""Where and how a torch network runs, for training and prediction alike: the device, mixed
precision, the threads of a dask worker, and batches bounded by memory and sized to the work.

* Threads: dask's nanny starts each worker with ``OMP_NUM_THREADS=1`` (torch reads it at import),
  so inside a worker torch is given the worker's own thread count (``--nthreads``, the
  manifest's ``compute.threads_per_worker``): every thread the worker was sized for, and no more
  (the workers of a machine share its cores). Outside a worker torch's setting is left alone.
* Memory: a batch's activations stay under a budget: half the free memory of a GPU; on a CPU
  256 MiB, or a quarter of a dask worker's memory per thread when that is less (the chunk's
  features and the outputs live there too).
* Batches sized to the work: the rows (or patches) of a chunk go in as few batches as the budget
  allows, of equal size, so a chunk that fits is one batch and none ends in a sliver.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from pipeline.errors import ModelError

__all__ = [
    "CPU_BATCH_BYTES",
    "activation_bytes",
    "autocast",
    "batch_for",
    "memory_budget",
    "resolve_device",
    "sized_to",
    "use_worker_threads",
    "worker_threads",
]

CPU_BATCH_BYTES = 256 * 2**20


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when a GPU is present, else the CPU; 'cuda' without a GPU is refused."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "training.device is 'cuda' but torch sees no CUDA GPU on this machine",
            fix="set model.training.device to auto or cpu, or run on a GPU node",
            field="model.training.device",
        )
    return torch.device(device)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 mixed precision on a GPU when ``enabled`` (no loss scaling needed), full
    precision otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def worker_threads() -> int | None:
    """The threads of the dask worker this code runs in (None outside a worker)."""
    worker = _worker()
    if worker is None:
        return None
    try:
        return max(1, int(worker.state.nthreads))
    except (AttributeError, TypeError, ValueError):
        return None


def use_worker_threads() -> int:
    """Inside a dask worker, set torch's threads to the worker's; torch's thread count."""
    threads = worker_threads()
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _worker_bytes_per_thread() -> int | None:
    worker = _worker()
    try:
        limit = worker.memory_manager.memory_limit if worker is not None else None
        threads = max(1, int(worker.state.nthreads)) if worker is not None else 1
    except (AttributeError, TypeError, ValueError):
        return None
    return int(limit) // threads if limit else None


def memory_budget(device: torch.device) -> int:
    """Bytes of activations one batch may hold on ``device``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(0.5 * free)
    per_thread = _worker_bytes_per_thread()
    return CPU_BATCH_BYTES if per_thread is None else min(CPU_BATCH_BYTES, per_thread // 4)


def batch_for(device: torch.device, item_bytes: int, requested: int) -> int:
    """Items per batch: what the memory budget holds, never more than ``requested``, at least 1."""
    return max(1, min(requested, memory_budget(device) // max(item_bytes, 1)))


def sized_to(n: int, cap: int) -> int:
    """Batch size for ``n`` items at most ``cap`` per batch: the fewest batches, equal sizes."""
    if n <= cap:
        return max(n, 1)
    batches = -(-n // cap)
    return -(-n // batches)


def activation_bytes(network: nn.Module, example: torch.Tensor) -> int:
    """Bytes per item of what the network's layers output for ``example`` (a batch of two or
    more items): the sum over every leaf module, a bound of what one item holds at once in
    inference mode, where each output is freed when the next layer has read it."""
    total = example.numel() * example.element_size()

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in network.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = network.training
    try:
        network.eval()
        with torch.inference_mode():
            network(example)
    finally:
        network.train(was_training)
        for hook in hooks:
            hook.remove()
    return -(-total // max(int(example.shape[0]), 1))
