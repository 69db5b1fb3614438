"""The learner preflight: what every kind of model checks before any pixel is read.

A learner's ``check`` is this one helper with the kind's builder: the kind serves the run's
task, the training settings suit that task, and the unfitted model builds for these features
(the builder raises ModelError naming the key to change). Fitting runs the same task rules, so a
model fitted without a preflight (a library call) is refused for the same reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.errors import ModelError
from pipeline.learn.config import ModelConfig
from pipeline.learn.contract import TASKS, Task

__all__ = ["Builder", "check_learner", "check_task_settings"]

# Builds (without fitting) the model ``config`` describes for the task and the feature names.
Builder = Callable[[ModelConfig, Task, Sequence[str]], object]


def check_task_settings(config: ModelConfig, task: Task, tasks: Sequence[Task] = TASKS) -> None:
    """The kind serves ``task`` (it does ``tasks``), and no setting is meant for another task."""
    if task not in tasks:
        others = ", ".join(t for t in TASKS if t not in tasks)
        raise ModelError(
            f"kind {config.kind} models do {' and '.join(tasks)} only; the run's task is {task}",
            fix=f"use kind torch or sklearn for {others}, or set task: {tasks[0]}",
            field="model.kind",
        )
    if task == "regression" and config.training.class_weights != "none":
        raise ModelError(
            "class_weights weigh classes, but the run's task is regression",
            fix="remove model.training.class_weights",
            field="model.training.class_weights",
        )


def check_learner(
    config: ModelConfig,
    task: Task,
    feature_names: Sequence[str],
    build: Builder,
    *,
    tasks: Sequence[Task] = TASKS,
) -> None:
    """Everything about the model that can be checked before any pixel is read: the task rules,
    then ``build`` for these features. Raises ModelError naming the key to change."""
    check_task_settings(config, task, tasks)
    build(config, task, feature_names)
