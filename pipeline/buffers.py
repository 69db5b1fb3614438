"""Arrays a thread reuses from one chunk to the next (``ChunkBuffers``, ``thread_buffers``).

A dask worker thread computes one chunk at a time, and each chunk needs the same large arrays
(a cube chunk's inputs and series, a prediction's feature table). New ones would each be
mapped, faulted in, zeroed by the kernel and unmapped again on every chunk (glibc maps every
block above 32 MiB itself): system time that the cube benchmark measured at a tenth of a
chunk's CPU.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

__all__ = ["ChunkBuffers", "thread_buffers"]


class ChunkBuffers:
    """Arrays that one thread reuses from one chunk to the next.

    A 512 px chunk of 32 dates, 4 bands and 37 target dates needs about 330 MB of arrays
    (inputs, gap-filled bands, indices), and its feature table as many again. An array taken
    from here is valid until the same name is taken again, so only code that is done with a
    chunk's arrays before it starts the next one (``build_chunk``, ``stream_features``,
    ``pipeline.learn.rows.pixel_rows``) passes buffers. Memory held: the largest chunk's
    arrays, per thread that built one.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """An uninitialized C-contiguous array of ``shape`` and ``dtype`` under ``name``."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            self._buffers.pop(name, None)  # freed before the larger one is made
            buffer = self._buffers[name] = np.empty(nbytes, dtype=np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)

    def clear(self) -> None:
        self._buffers.clear()


_THREAD = threading.local()


def thread_buffers() -> ChunkBuffers:
    """This thread's ``ChunkBuffers`` (a dask worker thread builds one chunk at a time)."""
    buffers = getattr(_THREAD, "buffers", None)
    if buffers is None:
        buffers = _THREAD.buffers = ChunkBuffers()
    return buffers
