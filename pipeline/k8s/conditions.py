"""``status.conditions`` of a SitsRun, as Kubernetes API conventions write them.

Each condition has a ``type``, a ``status`` ("True", "False" or "Unknown"), a CamelCase
``reason`` a tool can match, a ``message`` a person can act on, the ``lastTransitionTime`` of its
last change of status and the ``observedGeneration`` of the spec it describes. The phase stays the
one-word summary for ``kubectl get``; the conditions say why:

=============  ===================================================================================
Planned        the spec of this generation is accepted and the run's objects exist (False:
               invalid spec, refused at admission, or a change refused while the run goes on)
ClusterReady   the scheduler and at least one worker run (False with ``Unschedulable``,
               ``ImagePullFailed`` or ``Starting``, and the pods' own words)
Progressing    the driver runs ``sitsflow run`` (False once it has finished or before it starts)
Succeeded      every output is written
Failed         the run stopped for good (``DriverFailed``, ``InvalidSpec``, ``NotAdmitted``,
               ``Forbidden``, ``DriverJobDeleted``): the message says what to fix
=============  ===================================================================================

Pure functions: the operator computes the whole list and patches it only when it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PLANNED, CLUSTER_READY, PROGRESSING = "Planned", "ClusterReady", "Progressing"
SUCCEEDED, FAILED = "Succeeded", "Failed"
TYPES = (PLANNED, CLUSTER_READY, PROGRESSING, SUCCEEDED, FAILED)
MAX_MESSAGE = 2000

Condition = dict[str, Any]


def condition(
    kind: str, status: bool | None, reason: str, message: str, generation: int
) -> Condition:
    """One condition without its transition time (``merge`` stamps it)."""
    return {
        "type": kind,
        "status": "Unknown" if status is None else str(bool(status)),
        "reason": reason,
        "message": message[-MAX_MESSAGE:],
        "observedGeneration": generation,
    }


def merge(
    current: Sequence[Mapping[str, Any]] | None, updates: Iterable[Condition], now: str
) -> list[Condition]:
    """``current`` with ``updates`` applied: a condition keeps its lastTransitionTime while its
    status stays the same; the list is in the order of ``TYPES``."""
    by_type = {str(c.get("type")): dict(c) for c in current or ()}
    for update in updates:
        old = by_type.get(update["type"])
        same = old is not None and old.get("status") == update["status"]
        stamp = old.get("lastTransitionTime") if same and old else None
        by_type[update["type"]] = {**update, "lastTransitionTime": stamp or now}
    order = {kind: i for i, kind in enumerate(TYPES)}
    return sorted(by_type.values(), key=lambda c: order.get(str(c["type"]), len(order)))


def find(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any] | None:
    for item in conditions or ():
        if item.get("type") == kind:
            return item
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> bool:
    found = find(conditions, kind)
    return found is not None and found.get("status") == "True"
