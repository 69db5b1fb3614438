"""The work estimate and the refusal of workers too small for one unit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as hst

from pipeline.errors import ComputeError
from pipeline.run.estimate import WorkEstimate, check_memory, predict_bytes

MIB = 2**20


def estimate(chunk_size: int, acquisitions: int = 36, features: int = 37) -> WorkEstimate:
    # Bytes scale with the chunk's pixels, as CubePlan.bytes_per_chunk does.
    per_pixel = 4 * (acquisitions * 2 + 2 * features)
    return WorkEstimate(
        tiles=1, chunks=100, pixels=10**6, acquisitions=acquisitions, features=features,
        chunk_size=chunk_size, chunk_bytes=per_pixel * chunk_size**2,
        predict_bytes=predict_bytes(features, chunk_size), units={"cube": 100, "predict": 100},
    )  # fmt: skip


def test_a_fitting_run_passes_and_describes_its_work() -> None:
    work = estimate(256)
    check_memory(work, 4 * 2**30, 1)
    text = work.describe(1)
    assert "100 chunk(s) of 256 px" in text and "200 units" in text and "MiB per worker" in text
    assert work.as_dict()["tasks"] == 200


def test_too_small_workers_are_refused_with_what_would_fit() -> None:
    work = estimate(2048, acquisitions=300, features=400)
    with pytest.raises(ComputeError) as caught:
        check_memory(work, 4 * 2**30, 2)
    error = caught.value
    assert error.field == "compute"
    assert "2048 x 2048 px" in error.what and "4096 MiB memory limit" in error.what
    assert error.fix is not None
    assert "compute.chunk_size to" in error.fix and "compute.memory_limit to" in error.fix
    assert "threads_per_worker" in error.fix


@given(hst.sampled_from([64, 128, 256, 512, 1024, 2048, 4096]), hst.integers(1, 8),
       hst.sampled_from([1, 2, 4, 8, 16]))  # fmt: skip
def test_the_suggested_fixes_fit(chunk: int, threads: int, gib: int) -> None:
    work = estimate(chunk)
    limit = gib * 2**30
    try:
        check_memory(work, limit, threads)
    except ComputeError as error:
        assert error.fix is not None
        if "chunk_size to" in error.fix:
            suggested = int(error.fix.split("chunk_size to ")[1].split()[0])
            assert suggested % 16 == 0 and suggested < chunk
            check_memory(estimate(suggested), limit, threads)  # it fits
        needed = float(error.fix.split("memory_limit to ")[1].split("GiB")[0])
        check_memory(work, int(needed * 2**30), threads)  # so does the suggested limit
