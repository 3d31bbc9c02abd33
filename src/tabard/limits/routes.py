"""HTTP route for an org's quota usage."""

from __future__ import annotations

from fastapi import APIRouter

from tabard.core.runtime import ContextDep, RuntimeDep
from tabard.limits import policy, service
from tabard.limits.schemas import UsageOut

router = APIRouter(prefix="/v1/orgs/{org_id}", tags=["limits"])


@router.get("/usage", response_model=UsageOut)
async def get_usage(org_id: str, runtime: RuntimeDep, ctx: ContextDep) -> UsageOut:
    """The org's tier quotas, what it used today and this month (UTC), and the rate limits."""
    policy.require_usage_read(ctx.actor, org_id)
    async with runtime.database.read_only() as session:
        return await service.org_usage(session, runtime.kv, runtime.settings, runtime.clock, org_id)
