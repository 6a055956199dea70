"""POST /v1/users: create a learner, once."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody

from api.edge import idempotency
from api.edge.body import StrictBody
from api.edge.keyed import keyed_post, new_id
from api.edge.problems import POSTED, Conflict, problem_responses
from api.services import PrincipalDep, ServicesDep
from api.shapes import User, UserIn
from cql.clock import from_stored_time, utc_now
from cql.learners import UserRow

_encoder = msgspec.json.Encoder()


class UsersController(Controller):
    path = "/v1/users"
    tags = ["learners"]

    @post(
        "/",
        operation_id="createUser",
        status_code=201,
        dto=StrictBody[UserIn],
        return_dto=None,
        summary="Create a learner",
        responses=problem_responses(*POSTED),
    )
    async def create(
        self,
        request: Request,
        data: JSONBody[UserIn],
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: idempotency.KeyHeader = None,
    ) -> Response[User]:
        async def work(key: str | None) -> idempotency.Answer:
            user_id = data.user_id or new_id()
            row = UserRow(principal.tenant, user_id, data.email, data.name, utc_now())
            existing = await services.store.create_user(row)
            if existing is not None:
                if (existing.email, existing.name) != (row.email, row.name):
                    raise Conflict(
                        f"user_id {user_id!r} already exists with other details.", field="user_id"
                    )
                row = existing
            await services.store.list_row(services.store.listings.learner(row, key))
            return 201, _encoder.encode(
                User(row.user_id, row.email, row.name, from_stored_time(row.created_at))
            )

        return await keyed_post(request, data, principal, services, idempotency_key, work)
