"""POST /v1/utterances, POST /v1/utterances/batch, GET /v1/utterances/{id}."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody

from api.edge import idempotency, limits
from api.edge.body import BatchBody, StrictBody
from api.edge.keyed import keyed_post, new_id
from api.edge.problems import KEYED, POSTED, BadRequest, NotFound, problem_responses
from api.reads.shapes import Utterance, UtteranceInsight
from api.services import PrincipalDep, Services, ServicesDep
from api.shapes import (
    MAX_BATCH_ITEMS,
    Accepted,
    Batch,
    BatchIn,
    BatchResult,
    ErrorPoint,
    ItemResult,
    RejectedItem,
    UtteranceIn,
)
from api.writes import ingest
from cql.change_feed import shard_of
from cql.clock import from_stored_time
from cql.insights import InsightRow, insight_from_json
from cql.utterances import UtteranceRow
from live.events import utterance_event

_encoder = msgspec.json.Encoder()
BATCH_CONCURRENCY = 64


class UtterancesController(Controller):
    path = "/v1/utterances"
    tags = ["utterances"]

    @post(
        "/",
        operation_id="acceptUtterance",
        status_code=202,
        dto=StrictBody[UtteranceIn],
        return_dto=None,
        summary="Accept one utterance",
        responses=problem_responses(*POSTED, 404),
    )
    async def accept(
        self,
        request: Request,
        data: JSONBody[UtteranceIn],
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: idempotency.KeyHeader = None,
    ) -> Response[Accepted]:
        work = accept_one(services, principal.tenant, data)
        return await keyed_post(request, data, principal, services, idempotency_key, work)

    @post(
        "/batch",
        operation_id="acceptUtteranceBatch",
        dto=BatchBody,
        return_dto=None,
        opt={"rate_cost": limits.ITEMS},
        status_code=202,
        summary=f"Accept up to {MAX_BATCH_ITEMS:,} utterances, with a result per item",
        responses=problem_responses(*POSTED),
    )
    async def accept_batch(
        self,
        request: Request,
        data: JSONBody[BatchIn],
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: idempotency.KeyHeader = None,
    ) -> Response[BatchResult]:
        # BatchBody decodes the BatchIn sent into a Batch: each item an
        # utterance or a RejectedItem (the annotation is the documented shape).
        batch = cast(Batch, data)
        most = services.settings.api.max_batch_items
        if len(batch.utterances) > most:
            raise BadRequest(
                f"utterances: a batch holds at most {most} items, not {len(batch.utterances)}; "
                "split it into smaller batches.",
                field="utterances",
            )
        request.state.rate_headers.update(
            await limits.charge(services, principal, len(batch.utterances))
        )
        tenant = principal.tenant

        async def work(key: str | None) -> idempotency.Answer:
            items = [
                (item, _utterance_id(item) or new_id(i)) for i, item in enumerate(batch.utterances)
            ]
            results = await ingest.accept_batch(
                services.store, tenant, items, BATCH_CONCURRENCY, _answer
            )
            stored = _stored(items, results)
            events = [utterance_event(tenant, i, item.user_id, "pending") for item, i in stored]
            await services.live.publisher.publish(
                events, feed_shards=_shards(services, tenant, (i for _item, i in stored))
            )
            return _answer(results)

        return await keyed_post(request, batch, principal, services, idempotency_key, work)

    @get(
        "/{utterance_id:str}",
        operation_id="getUtterance",
        summary="An utterance and its processing status",
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def read(
        self, utterance_id: FromPath[str], principal: PrincipalDep, services: ServicesDep
    ) -> Utterance:
        return await utterance_of(services, principal.tenant, utterance_id)


async def utterance_of(services: Services, tenant: str, utterance_id: str) -> Utterance:
    """The answer of GET /v1/utterances/{utterance_id} (POST /v1/ask runs it too):
    one row, the insight beside the status (cql/schema/014)."""
    row = await services.store.utterance(tenant, utterance_id)
    if row is None:
        raise NotFound(f"utterance {utterance_id!r} does not exist.")
    insight = await _insight_of(services, row)
    return Utterance(
        utterance_id=row.utterance_id,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        text=row.text,
        timestamp=from_stored_time(row.ts),
        errors=[ErrorPoint(c, s) for c, s in row.errors or []],
        words_learned=row.words_learned,
        received_at=from_stored_time(row.received_at),
        status=row.status,
        status_reason=row.status_reason,
        insight=None if insight is None else _insight(insight),
    )


def accept_one(
    services: Services, tenant: str, data: UtteranceIn
) -> Callable[[str | None], Awaitable[idempotency.Answer]]:
    """The work of accepting one utterance, the same whether it came by POST
    or over the WebSocket; its live `utterance` event follows the write."""

    async def work(key: str | None) -> idempotency.Answer:
        utterance_id = data.utterance_id or new_id()
        done = await ingest.accept(services.store, tenant, data, utterance_id, answer=_accepted)
        if not done.duplicate:
            event = utterance_event(tenant, done.utterance_id, data.user_id, done.status)
            shards = _shards(services, tenant, [done.utterance_id])
            await services.live.publisher.publish([event], feed_shards=shards)
        return _accepted(done)

    return work


def _accepted(done: Accepted) -> idempotency.Answer:
    return 202, _encoder.encode(done)


def _answer(results: list[ItemResult]) -> idempotency.Answer:
    return 202, _encoder.encode(_summary(results))


def _summary(results: list[ItemResult]) -> BatchResult:
    rejected = sum(r.status >= 400 for r in results)
    duplicates = sum(r.duplicate for r in results)
    return BatchResult(len(results) - rejected - duplicates, duplicates, rejected, results)


def _stored(
    items: list[tuple[UtteranceIn | RejectedItem, str]], results: list[ItemResult]
) -> list[tuple[UtteranceIn, str]]:
    """The items this batch stored (201), with their utterance ids."""
    return [
        (item, result.utterance_id)
        for result, (item, _id) in zip(results, items, strict=True)
        if result.status == 201 and result.utterance_id and isinstance(item, UtteranceIn)
    ]


def _shards(services: Services, tenant: str, utterance_ids: Iterable[str]) -> set[int]:
    """The feed shards these utterances' entries went to: their doorbells."""
    shards = services.settings.feed.shards
    return {shard_of(tenant, utterance_id, shards) for utterance_id in utterance_ids}


def _utterance_id(item: UtteranceIn | RejectedItem) -> str | None:
    return item.utterance_id if isinstance(item, UtteranceIn) else None


async def _insight_of(services: Services, row: UtteranceRow) -> InsightRow | None:
    if row.insight is not None:
        with contextlib.suppress(msgspec.DecodeError):
            return insight_from_json(row.insight)
    if row.status != "pending":
        # Analysed (or being analysed again) before utterances_by_id held
        # the insight, or held in a shape this version cannot read: the
        # record is the truth either way.
        return await services.store.insight(row.tenant, row.utterance_id)
    return None


def _insight(row: InsightRow) -> UtteranceInsight:
    return UtteranceInsight(
        sentiment=row.sentiment,
        topics=row.topics,
        confidence=row.confidence,
        reasoning=row.reasoning,
        model=row.model,
        prompt_version=row.prompt_version,
        parse_status=row.parse_status,
        attempts=row.attempts,
        latency_ms=row.latency_ms,
        failure_reason=row.failure_reason,
        analyzed_at=from_stored_time(row.analyzed_at),
    )
