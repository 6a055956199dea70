"""The listings: GET /v1/users, /v1/users/{id}/conversations,
/v1/users/{id}/utterances and /v1/conversations/{id}/utterances, each paged
with an opaque token (the reads: api/reads/listings.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath

from api.edge.problems import KEYED, BadRequest, NotFound, problem_responses
from api.reads import listing_params, pages, query
from api.reads.listing_shapes import ConversationPage, ListedUtterance, UserPage, UtterancePage
from api.reads.listings import ID_END, UtteranceTuple
from api.services import PrincipalDep, Services, ServicesDep
from api.shapes import Conversation, ErrorPoint, User
from cql.clock import EPOCH, from_ms, from_stored_time, to_ms, to_stored_time

LONGEST = timedelta(days=92)
PAGED = ("limit", "page_token")

PAGING_DOC = f"""At most `limit` rows a page (1 to {listing_params.LIMIT_MAX}, default
{listing_params.LIMIT_DEFAULT}); pass `next_page_token` back as `page_token`, with the same
path and filters, for the next page (`limit` may change). Walking every page
returns each row once; `next_page_token` is null on the last page."""


class ListingsController(Controller):
    path = "/v1"

    @get(
        "/users",
        operation_id="listUsers",
        tags=["learners"],
        summary="The tenant's learners in user_id order, optionally by id prefix",
        description=PAGING_DOC,
        responses=problem_responses(*KEYED, 400),
    )
    async def users(
        self,
        request: Request,
        principal: PrincipalDep,
        services: ServicesDep,
        prefix: listing_params.Prefix = None,
        limit: listing_params.Limit = None,
        page_token: listing_params.PageToken = None,
    ) -> UserPage:
        query.reject_unknown(request, ("prefix", *PAGED))
        start = listing_params.prefix(prefix)
        size = listing_params.page_size(limit)
        belongs_to = pages.digest(principal.tenant, "users", start)
        after = None if page_token is None else pages.decode(page_token, belongs_to, tuple[str])[0]
        if after is not None and not after.startswith(start):
            raise BadRequest("`page_token` is outside the prefix asked for.", field="page_token")
        rows = await services.listings.learners(
            principal.tenant, after or start, after is None, start + ID_END, size
        )
        users = [User(r.user_id, r.email, r.name, from_stored_time(r.created_at)) for r in rows]
        return UserPage(users[:size], _next(users, size, lambda u: (u.user_id,), belongs_to))

    @get(
        "/users/{user_id:str}/conversations",
        operation_id="listUserConversations",
        tags=["conversations"],
        summary="A learner's conversations in conversation_id order",
        description=PAGING_DOC,
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def conversations(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        limit: listing_params.Limit = None,
        page_token: listing_params.PageToken = None,
    ) -> ConversationPage:
        query.reject_unknown(request, PAGED)
        tenant = principal.tenant
        size = listing_params.page_size(limit)
        belongs_to = pages.digest(tenant, "conversations", user_id)
        after = "" if page_token is None else pages.decode(page_token, belongs_to, tuple[str])[0]
        user, rows = await asyncio.gather(
            services.store.user(tenant, user_id),
            services.listings.conversations(tenant, user_id, after, size),
        )
        if user is None:
            raise _no_learner(user_id)
        listed = [
            Conversation(r.conversation_id, r.user_id, r.title, from_stored_time(r.started_at))
            for r in rows
        ]
        token = _next(listed, size, lambda c: (c.conversation_id,), belongs_to)
        return ConversationPage(listed[:size], token)

    @get(
        "/users/{user_id:str}/utterances",
        operation_id="listUserUtterances",
        tags=["utterances"],
        summary="A learner's utterances with timestamps in [from, to), in time order",
        description=f"`from` and `to` are each a date YYYY-MM-DD (its start in UTC) or an "
        f"RFC 3339 timestamp with an offset, at most {LONGEST.days} days apart.\n\n" + PAGING_DOC,
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def user_utterances(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        from_: listing_params.DayFrom = None,
        to: listing_params.DayTo = None,
        limit: listing_params.Limit = None,
        page_token: listing_params.PageToken = None,
    ) -> UtterancePage:
        query.reject_unknown(request, ("from", "to", *PAGED))
        start, end = listing_params.utterance_range(from_, to, LONGEST)
        size = listing_params.page_size(limit)
        belongs_to = pages.digest(
            principal.tenant, "user-utterances", user_id, to_ms(start), to_ms(end)
        )
        after = _after(page_token, belongs_to, (start, ""))
        if not start <= after[0] < end:
            raise BadRequest("`page_token` is outside the range asked for.", field="page_token")
        return await _utterance_page(
            services, principal.tenant, ("user", user_id), after, end, size, belongs_to
        )

    @get(
        "/conversations/{conversation_id:str}/utterances",
        operation_id="listConversationUtterances",
        tags=["utterances"],
        summary="A conversation's utterances in time order",
        description=PAGING_DOC,
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def conversation_utterances(
        self,
        request: Request,
        conversation_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        limit: listing_params.Limit = None,
        page_token: listing_params.PageToken = None,
    ) -> UtterancePage:
        query.reject_unknown(request, PAGED)
        size = listing_params.page_size(limit)
        belongs_to = pages.digest(principal.tenant, "conversation-utterances", conversation_id)
        after = _after(page_token, belongs_to, (EPOCH, ""))
        scope = ("conversation", conversation_id)
        return await _utterance_page(
            services, principal.tenant, scope, after, None, size, belongs_to
        )


async def _utterance_page(
    services: Services,
    tenant: str,
    scope: tuple[str, str],
    after: tuple[datetime, str],
    end: datetime | None,
    size: int,
    belongs_to: bytes,
) -> UtterancePage:
    """A page of a learner's (scope "user", up to `end`) or a
    conversation's utterances, after checking the owner exists."""
    kind, owner_id = scope
    reads = services.listings
    if kind == "user":
        assert end is not None
        owner = services.store.user(tenant, owner_id)
        rows = reads.user_utterances(tenant, owner_id, after, end, size)
    else:
        owner = services.store.conversation(tenant, owner_id)
        rows = reads.conversation_utterances(tenant, owner_id, after, size)
    found, listed = await asyncio.gather(owner, rows)
    if found is None:
        raise _no_learner(owner_id) if kind == "user" else _no_conversation(owner_id)
    utterances = [_utterance(row) for row in listed]
    token = _next(
        utterances, size, lambda u: (to_ms(to_stored_time(u.timestamp)), u.utterance_id), belongs_to
    )
    return UtterancePage(utterances[:size], token)


def _utterance(row: UtteranceTuple) -> ListedUtterance:
    ts, utterance_id, conversation_id, user_id, text, errors, words, status = row
    return ListedUtterance(
        utterance_id, conversation_id, user_id, text, from_stored_time(ts),
        [ErrorPoint(c, s) for c, s in errors or []], words, status,
    )  # fmt: skip


def _next(rows: list[Any], size: int, position: Any, belongs_to: bytes) -> str | None:
    """The token after the page's last row when a row beyond the page was read."""
    return pages.encode(position(rows[size - 1]), belongs_to) if len(rows) > size else None


def _after(
    token: str | None, belongs_to: bytes, first: tuple[datetime, str]
) -> tuple[datetime, str]:
    if token is None:
        return first
    ts_ms, utterance_id = pages.decode(token, belongs_to, tuple[int, str])
    try:
        return from_ms(ts_ms), utterance_id
    except (OverflowError, ValueError):
        raise BadRequest(
            "`page_token` is outside the range asked for.", field="page_token"
        ) from None


def _no_learner(user_id: str) -> NotFound:
    return NotFound(f"Learner {user_id!r} does not exist.", field="user_id")


def _no_conversation(conversation_id: str) -> NotFound:
    return NotFound(f"Conversation {conversation_id!r} does not exist.", field="conversation_id")
