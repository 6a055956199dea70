"""POST /v1/ask: a plain-language question answered with a plan over the
served reads, its explanation, the equivalent GET request and its data
(api/ask/)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import JSONBody

from api.ask.answer import answer
from api.ask.shapes import MAX_QUESTION_CHARS, Asked, AskIn
from api.edge import idempotency
from api.edge.body import StrictBody
from api.edge.keyed import keyed_post
from api.edge.problems import POSTED, problem_responses
from api.services import PrincipalDep, ServicesDep

_encoder = msgspec.json.Encoder()

ASK_DOC = f"""\
Answers a question in plain English (at most {MAX_QUESTION_CHARS} characters)
with a plan over the served reads: error counts, top errors, words
practised, insights or one utterance. The answer has the plan (`operation`
and the GET endpoint's parameters), an explanation, the equivalent GET
`url`, who made the plan (`answered_by`: `rules`, or the model's name) and
`data`, exactly what that GET request answers (null with `dry_run`).

Relative dates (today, yesterday, this or last week or month, the last N
days) are resolved in `tz` (an IANA name, default UTC) unless the question
names a zone. No query language is ever generated: a plan is a call to a
GET endpoint, checked by that endpoint's parameter rules and run by its
code, so its limits, cache and `as_of` apply. Only the API key's tenant is
ever read, and a learner named must be one of its learners.

A question that asks to change data, reach another tenant or anything
outside the served reads is a 422 with `refused: {{"reason": ...}}`; one
that misses something (which learner?) or names what does not exist is a
422 with `clarify: {{"missing": [...], "reason": ...}}`.
"""


class AskController(Controller):
    path = "/v1/ask"
    tags = ["ask"]

    @post(
        "/",
        operation_id="ask",
        status_code=200,
        dto=StrictBody[AskIn],
        return_dto=None,
        summary="Answer a question with a plan over the served reads",
        description=ASK_DOC,
        responses=problem_responses(*POSTED),
    )
    async def ask(
        self,
        request: Request,
        data: JSONBody[AskIn],
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: idempotency.KeyHeader = None,
    ) -> Response[Asked]:
        # Every POST takes an Idempotency-Key (SPEC): a repeat replays the
        # first answer, data included, rather than asking again.
        async def work(_key: str | None) -> idempotency.Answer:
            asked = await answer(services, principal.tenant, data, datetime.now(UTC))
            return 200, _encoder.encode(asked)

        return await keyed_post(request, data, principal, services, idempotency_key, work)
