"""Charging a request to its API key's token bucket, shared by every API
process through Redis (cql/ratelimit.py). A request costs one token; a batch
costs one per item, charged by its handler once it knows the count (routes
marked `opt={"rate_cost": "items"}` are skipped by the middleware)."""

from __future__ import annotations

from litestar.datastructures import ResponseHeader

from api.edge.auth import Principal
from api.edge.problems import RateLimited, ServiceUnavailable
from api.services import Services
from runtime.ratelimit import RateLimiterUnavailable, decide, headers

ITEMS = "items"

# For the OpenAPI document of every keyed route. Absent only when Redis is
# down and the configured policy lets requests through uncounted.
RATE_LIMIT_HEADERS = [
    ResponseHeader(
        name="RateLimit-Limit",
        documentation_only=True,
        description="Tokens the API key's bucket holds when full (its burst).",
    ),
    ResponseHeader(
        name="RateLimit-Remaining",
        documentation_only=True,
        description="Tokens left after this request; a batch costs one per item.",
    ),
    ResponseHeader(
        name="RateLimit-Reset",
        documentation_only=True,
        description="Seconds until the bucket is full again.",
    ),
]


async def charge(services: Services, principal: Principal, cost: int) -> dict[str, str]:
    """The RateLimit headers for this request; RateLimited when over the limit."""
    try:
        decision = await decide(
            services.limiter,
            principal.key_id,
            principal.rate,
            principal.burst,
            cost,
            services.settings.api.redis_failure_policy,
        )
    except RateLimiterUnavailable:
        raise ServiceUnavailable(
            "The rate limiter cannot be reached, and this deployment refuses requests it cannot count.",
            retry_after_s=services.settings.api.retry_after_s,
        ) from None
    if decision is None:
        return {}
    fields = headers(decision)
    if not decision.allowed:
        raise RateLimited(
            f"This API key is limited to {principal.rate:g} requests per second (burst {principal.burst}); "
            f"this request costs {cost}. Retry after {fields['Retry-After']} s.",
            retry_after_s=decision.retry_after_s,
            headers=fields,
        )
    return fields
