"""POST /v1/conversations: start a conversation for an existing learner."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody

from api.edge import idempotency
from api.edge.body import StrictBody
from api.edge.keyed import keyed_post, new_id
from api.edge.problems import POSTED, Conflict, NotFound, problem_responses
from api.services import PrincipalDep, ServicesDep
from api.shapes import Conversation, ConversationIn
from cql.clock import from_stored_time, to_stored_time, utc_now
from cql.learners import ConversationRow

_encoder = msgspec.json.Encoder()


class ConversationsController(Controller):
    path = "/v1/conversations"
    tags = ["conversations"]

    @post(
        "/",
        operation_id="createConversation",
        status_code=201,
        dto=StrictBody[ConversationIn],
        return_dto=None,
        summary="Start a conversation",
        responses=problem_responses(*POSTED, 404),
    )
    async def create(
        self,
        request: Request,
        data: JSONBody[ConversationIn],
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: idempotency.KeyHeader = None,
    ) -> Response[Conversation]:
        tenant = principal.tenant

        async def work(key: str | None) -> idempotency.Answer:
            if await services.store.user(tenant, data.user_id) is None:
                raise NotFound(
                    f"user {data.user_id!r} does not exist; create it with POST /v1/users.",
                    field="user_id",
                )
            conversation_id = data.conversation_id or new_id()
            started = to_stored_time(data.started_at) if data.started_at else utc_now()
            row = ConversationRow(tenant, conversation_id, data.user_id, data.title, started)
            existing = await services.store.create_conversation(row)
            if existing is not None:
                if (existing.user_id, existing.title) != (row.user_id, row.title):
                    raise Conflict(
                        f"conversation_id {conversation_id!r} already exists with other details.",
                        field="conversation_id",
                    )
                row = existing
            await services.store.list_row(services.store.listings.conversation(row, key))
            body = Conversation(
                row.conversation_id, row.user_id, row.title, from_stored_time(row.started_at)
            )
            return 201, _encoder.encode(body)

        return await keyed_post(request, data, principal, services, idempotency_key, work)
