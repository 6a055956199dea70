"""One learner: GET /v1/users/{user_id}, and DELETE to erase it
(api/writes/erase.py). One controller, so the path answers OPTIONS with both."""

from __future__ import annotations

from datetime import datetime

import structlog
from litestar import Controller, delete, get
from litestar.params import FromPath
from redis.exceptions import RedisError

from api.edge.problems import KEYED, NotFound, problem_responses
from api.services import PrincipalDep, ServicesDep
from api.shapes import Struct, User
from cql.clock import from_stored_time
from runtime.generations import generation_key

log = structlog.get_logger("api.resources.learner")

ERASE_DOC = """\
Erases the learner: its utterances (with their insights and processing
status), conversations, listing rows, the idempotency answers of the
requests that wrote them, and everything the dataflows derived (error facts
and counts, learning buckets, insights). The API's own rows are gone when
this answers; the dataflows' within about two seconds (their freshness
bound). The erasure is recorded (`erased_at`), so no replay of the change
feed and no restart brings anything back. A repeat answers the same
`erased_at` and deletes anything a request racing the erasure left. The id
can then be created again, as a new learner with nothing.
"""


class Erased(Struct):
    user_id: str
    erased_at: datetime


class LearnerController(Controller):
    path = "/v1/users"
    tags = ["learners"]

    @get(
        "/{user_id:str}",
        operation_id="getUser",
        summary="One learner",
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def user(
        self, user_id: FromPath[str], principal: PrincipalDep, services: ServicesDep
    ) -> User:
        row = await services.store.user(principal.tenant, user_id)
        if row is None:
            raise NotFound(f"Learner {user_id!r} does not exist.", field="user_id")
        return User(row.user_id, row.email, row.name, from_stored_time(row.created_at))

    @delete(
        "/{user_id:str}",
        operation_id="eraseUser",
        status_code=200,
        summary="Erase a learner and everything derived from it",
        description=ERASE_DOC,
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def erase(
        self, user_id: FromPath[str], principal: PrincipalDep, services: ServicesDep
    ) -> Erased:
        tenant = principal.tenant
        done = await services.eraser.erase(tenant, user_id)
        if done is None:
            raise NotFound(f"Learner {user_id!r} does not exist.", field="user_id")
        erased_at, conversations = done
        services.store.forget_learner(tenant, user_id, conversations)
        try:
            # Cached answers about the learner become unreachable at once.
            await services.redis.incr(generation_key(tenant, user_id))
        except RedisError as exc:
            log.warning("generation_not_bumped", error=repr(exc))
        log.info("learner_erased", tenant=tenant, user_id=user_id, erased_at=erased_at)
        return Erased(user_id, from_stored_time(erased_at))
