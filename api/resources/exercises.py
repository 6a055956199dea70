"""POST /v1/users/{user_id}/exercises: exercises for the learner's most
frequent errors, chosen from the served error tables (all time, or since a
day), written by the model, or by the offline template library when no
model is configured. The answer says which counts chose the targets."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from api.edge import idempotency
from api.edge.body import StrictBody
from api.edge.keyed import keyed_post
from api.edge.problems import POSTED, BadRequest, ServiceUnavailable, problem_responses
from api.reads.errors import TopQuery, top_errors
from api.reads.shapes import ErrorCount
from api.services import PrincipalDep, Services, ServicesDep
from api.shapes import Struct
from llm import exercises as library
from llm.exercises import Exercise, ExercisesUnusable, Target

_encoder = msgspec.json.Encoder()
SINCE_DAYS = 366


class ExercisesIn(Struct, frozen=True):
    count: Annotated[int, Meta(ge=1, le=10, description="How many error types to target")] = 3
    since: Annotated[
        date | None, Meta(description="Count errors from this UTC day on; all time if absent")
    ] = None


# Frozen, so one instance can be the default: an empty body.
DEFAULTS = ExercisesIn()


class TargetWindow(Struct):
    since: date | None
    as_of: datetime | None


class Exercises(Struct):
    user_id: str
    targets: list[ErrorCount]
    window: TargetWindow
    model: str
    prompt_version: str
    exercises: list[Exercise]


class ExercisesController(Controller):
    path = "/v1/users/{user_id:str}/exercises"
    tags = ["exercises"]

    @post(
        "/",
        operation_id="createExercises",
        summary="Exercises for the learner's most frequent errors",
        status_code=200,
        dto=StrictBody[ExercisesIn],
        return_dto=None,
        responses=problem_responses(*POSTED, 404, 503),
    )
    async def create(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: idempotency.KeyHeader = None,
        # Every field has a default, so an empty body means the defaults.
        data: JSONBody[ExercisesIn] = DEFAULTS,
    ) -> Response[Exercises]:
        async def work(key: str | None) -> idempotency.Answer:
            answer = await exercises_for(services, principal.tenant, user_id, data)
            return 200, _encoder.encode(answer)

        return await keyed_post(request, data, principal, services, idempotency_key, work)


async def exercises_for(
    services: Services, tenant: str, user_id: str, asked: ExercisesIn
) -> Exercises:
    today = datetime.now(UTC).date()
    if asked.since is not None and not (
        today.toordinal() - SINCE_DAYS <= asked.since.toordinal() <= today.toordinal()
    ):
        raise BadRequest(f"since must be a day within the last {SINCE_DAYS} days.", field="since")
    top = await top_errors(services, tenant, user_id, TopQuery(asked.count, asked.since), today)
    targets = [Target(e.category, e.subcategory, e.count) for e in top.errors]
    model, version, written = await _write(services, targets)
    return Exercises(
        user_id, top.errors, TargetWindow(top.since, top.as_of), model, version, written
    )


async def _write(services: Services, targets: list[Target]) -> tuple[str, str, list[Exercise]]:
    if not targets:
        return library.OFFLINE_MODEL, library.PROMPT_VERSION, []
    if not services.llm.online:
        return library.OFFLINE_MODEL, library.PROMPT_VERSION, library.offline_exercises(targets)
    reply = await services.llm.chat(library.build_messages(targets))
    if reply.text is None:
        raise ServiceUnavailable(
            f"The exercise model could not be reached ({reply.failure}); retry later.",
            retry_after_s=5,
        )
    try:
        return reply.model, library.PROMPT_VERSION, library.parse_exercises(reply.text, targets)
    except ExercisesUnusable as unusable:
        raise ServiceUnavailable(
            f"The exercise model's answer was unusable ({unusable}); retry later.", retry_after_s=5
        ) from None
