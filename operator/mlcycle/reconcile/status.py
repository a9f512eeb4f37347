"""Writing an object's status: through the status subresource, only when it changed, with
the written status remembered for the passes queued behind this one."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from pydantic import BaseModel

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.api.v1alpha1 import API_VERSION, CustomResource
from mlcycle.plan.conditions import EventIntent, StatusPlan
from mlcycle.reconcile.memory import ObjectMemory

Resource = TypeVar("Resource", bound=CustomResource)


async def write_status(
    cluster: ClusterClient, obj: CustomResource, memory: ObjectMemory[Any], planned: StatusPlan
) -> list[EventIntent]:
    """Patches the status when the plan changed it (a resync that finds nothing new never
    bumps the resourceVersion) and returns the Events the plan announces."""
    if planned.changed:
        memory.written_status = await asyncio.to_thread(
            cluster.patch_status,
            API_VERSION,
            obj.kind_name(),
            str(obj.metadata.namespace),
            str(obj.metadata.name),
            planned.status,
        )
    return list(planned.events)


def with_written_status(
    obj: Resource, memory: ObjectMemory[Any], status_model: type[BaseModel]
) -> Resource:
    """`obj` with the status this operator last wrote, when it wrote one: a trigger queued
    on the lock holds the body it was fired with, whose status may predate the previous
    holder's write, and planning from it would announce the same transition again."""
    if memory.written_status is None:
        return obj
    return obj.model_copy(update={"status": status_model.model_validate(memory.written_status)})
