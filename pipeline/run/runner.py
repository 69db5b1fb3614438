"""The run engine's entry points, where callers have long imported them from: planning
(``pipeline.run.plan``) and execution (``pipeline.run.execute``) live in their own modules."""

from pipeline.run.execute import RunResult, execute
from pipeline.run.plan import RunPlan, StageStatus, plan_run, run_status, sessions

__all__ = ["RunPlan", "RunResult", "StageStatus", "execute", "plan_run", "run_status", "sessions"]
