"""The stage registry: one ordered list, and a stage added from outside the package (a toy
stage registered by this test) that plans, runs and resumes in a real run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline import stages as registry
from pipeline.errors import SitsflowError
from pipeline.manifest import load_manifest, resolve
from pipeline.run.context import PlanContext, RunContext
from pipeline.run.execute import execute
from pipeline.run.executor import StageWork
from pipeline.run.logs import RunLog
from pipeline.run.plan import RunPlan, plan_run
from pipeline.run.progress import Progress
from pipeline.run.stage import StagePlan, stage_digest
from pipeline.run.units import Unit
from pipeline.storage import RunStore
from tests.run.helpers import demo_manifest

BUILT_IN = (
    "discover",
    "cube",
    "samples",
    "train",
    "predict",
    "smooth",
    "mosaic",
    "postprocess",
    "validate",
    "fusion",
    "objects",
)
VALIDATE = BUILT_IN.index("validate") + 1


def test_the_registry_lists_the_stages_in_order_and_stays_light() -> None:
    assert registry.stage_names() == BUILT_IN
    assert [s.name for s in registry.stages()] == list(BUILT_IN)
    for stage in registry.stages():  # every stage plans from stages before it
        before = BUILT_IN[: BUILT_IN.index(stage.name)]
        assert set(stage.needs) <= set(before), stage.name
    heavy = "('numba', 'sklearn', 'torch')"
    code = f"import sys, pipeline.stages; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- a toy stage: the number of mapped chunks times a factor, written as JSON -----------------


@dataclass(frozen=True)
class ToyContext:
    root: str
    target: str


def count_unit(context: ToyContext, payload: tuple[int, int]) -> dict[str, Any]:
    chunks, factor = payload
    value = chunks * factor
    RunStore(context.root).write_text(context.target, json.dumps({"value": value}))
    return {"value": value}


class Count:
    """Reads the predict stage's units (declared in ``needs``): its digest chains on theirs."""

    name = "toy_count"
    version = 1
    needs = ("predict",)

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def plan(self, context: PlanContext) -> StagePlan:
        predicted = context.input("predict").units
        made = stage_digest(self.name, self.version, [u.digest for u in predicted], self.factor)
        unit = Unit(self.name, "count", made, payload=(len(predicted), self.factor))
        return StagePlan(self.name, [unit], digest=made, files={"toy": "toy/count.json"})

    def run(self, context: RunContext) -> None:
        plan = context.stage_plan(self.name)
        work = StageWork(
            self.name, plan.units, count_unit, ToyContext(context.store.root, "toy/count.json")
        )
        context.results[self.name] = context.run(work).summaries["count"]["value"]


def note_unit(context: ToyContext, payload: int) -> dict[str, Any]:
    RunStore(context.root).write_text(context.target, f"count {payload}\n")
    return {"count": payload}


class Note:
    """Downstream of the toy count (and of nothing else it reads)."""

    name = "toy_note"
    version = 1
    needs = ("toy_count",)

    def plan(self, context: PlanContext) -> StagePlan:
        made = stage_digest(self.name, self.version, context.input("toy_count").digest)
        return StagePlan(self.name, [Unit(self.name, "note", made)])

    def run(self, context: RunContext) -> None:
        plan = context.stage_plan(self.name)
        count = context.results.get("toy_count")
        if count is None:  # the count was kept from a session before: read it back
            count = json.loads(context.store.read_text("toy/count.json"))["value"]
        unit = Unit(self.name, "note", plan.units[0].digest, payload=count)
        work = StageWork(
            self.name,
            [unit],
            note_unit,
            ToyContext(context.store.root, "toy/note.txt"),
            on_cluster=False,
        )
        context.run(work)


@pytest.fixture
def toy_stages() -> Iterator[Count]:
    count = Count(factor=2)
    registry.register(count, after="predict")
    registry.register(Note(), after="validate")
    try:
        yield count
    finally:
        registry.unregister("toy_note")
        registry.unregister("toy_count")
    assert registry.stage_names() == BUILT_IN


def test_register_refuses_a_misplaced_stage(toy_stages: Count) -> None:
    assert registry.stage_names() == (
        *BUILT_IN[:5],
        "toy_count",
        *BUILT_IN[5:VALIDATE],
        "toy_note",
        *BUILT_IN[VALIDATE:],
    )
    with pytest.raises(SitsflowError, match="registered already"):
        registry.register(Count(1))
    late = Note()
    late.name = "toy_early"  # needs toy_count, placed before it
    with pytest.raises(SitsflowError, match="would not run before it"):
        registry.register(late, after="discover")
    with pytest.raises(SitsflowError, match="not a stage"):
        registry.register(late, after="smoothing")


def _run(manifest: Path, resume: bool) -> tuple[RunPlan, dict[str, tuple[int, int]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_run(resolve(load_manifest(manifest)), resume=resume)
        progress = Progress(log=RunLog("json", stream=io.StringIO()), interval=0.0)
        result = execute(plan, progress)
    return plan, {name: (o.ran, o.skipped) for name, o in result.outcomes.items()}


@pytest.mark.slow
def test_a_registered_stage_runs_and_resumes(tmp_path: Path, toy_stages: Count) -> None:
    manifest = demo_manifest(tmp_path)
    plan, first = _run(manifest, resume=False)
    chunks = len(plan.units["predict"])
    store = RunStore(plan.store.root)
    assert json.loads(store.read_text("toy/count.json")) == {"value": 2 * chunks}
    assert store.read_text("toy/note.txt") == f"count {2 * chunks}\n"
    assert first["toy_count"] == (1, 0) and first["toy_note"] == (1, 0)
    summary = json.loads(store.read_text("run.json"))
    assert summary["outputs"]["toy"].endswith("toy/count.json")

    _, again = _run(manifest, resume=True)  # nothing changed: every unit kept
    assert all(ran == 0 for ran, _ in again.values()), again
    assert again["toy_count"] == (0, 1) and again["toy_note"] == (0, 1)

    toy_stages.factor = 3  # the toy's parameter: it and what is downstream of it run again
    _, changed = _run(manifest, resume=True)
    ran = {name for name, (count, _) in changed.items() if count}
    assert ran == {"toy_count", "toy_note"}, changed
    assert json.loads(store.read_text("toy/count.json")) == {"value": 3 * chunks}
    assert store.read_text("toy/note.txt") == f"count {3 * chunks}\n"
