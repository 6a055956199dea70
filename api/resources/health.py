"""Liveness and readiness: /health says the process answers; /ready says
Cassandra and Redis both answer within a short deadline."""

from __future__ import annotations

import asyncio

from litestar import Controller, Request, Response, get

from api.edge.problems import problem, problem_responses
from api.services import Services
from cql.aio import execute

READY_DEADLINE_S = 1.0


class HealthController(Controller):
    tags = ["operations"]

    @get("/health", operation_id="health", summary="Liveness")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/ready",
        operation_id="ready",
        summary="Readiness: Cassandra and Redis reachable",
        responses=problem_responses(503),
    )
    async def ready(self, request: Request) -> Response:
        # Not injected: while the worker is still connecting there are no
        # services yet, and that is exactly "Cassandra down".
        services: Services | None = request.app.state.get("services")
        if services is None:
            checks = [False, False]
        else:
            checks = await asyncio.gather(_cassandra(services), _redis(services))
        state = dict(zip(("cassandra", "redis"), checks, strict=True))
        if all(checks):
            return Response({"status": "ready", "cassandra": "ok", "redis": "ok"})
        down = ", ".join(name for name, ok in state.items() if not ok)
        return problem(
            503,
            "not-ready",
            "Not ready",
            f"Not reachable within {READY_DEADLINE_S}s: {down}.",
            headers={"Retry-After": "1"},
            checks={name: "ok" if ok else "down" for name, ok in state.items()},
        )


async def _cassandra(services: Services) -> bool:
    try:
        await asyncio.wait_for(execute(services.db.session, services.store.ping), READY_DEADLINE_S)
    except Exception:
        return False
    return True


async def _redis(services: Services) -> bool:
    try:
        return bool(await asyncio.wait_for(services.redis.ping(), READY_DEADLINE_S))
    except Exception:
        return False
