"""A question's whole path: planned by the rules, then by the model when
the rules do not settle it and one is configured; checked; explained; run."""

from __future__ import annotations

from datetime import datetime

import msgspec
import structlog

from api.ask.execute import check, run, url_of
from api.ask.explain import explain
from api.ask.model import Unanswered, model_plan
from api.ask.rules import plan_question
from api.ask.shapes import Asked, AskIn, Clarify, Refused, Verdict
from api.reads import periods
from api.services import Services

log = structlog.get_logger("api.ask")
RULES = "rules"
OUTSIDE = Refused(
    "it is not a question about the served reads: error counts, top errors, words "
    "practised, insights or one utterance"
)


async def answer(services: Services, tenant: str, asked: AskIn, now: datetime) -> Asked:
    """The plan of `asked` and, unless a dry run, its data; raises the 422
    of a refusal or a clarification, the 400 of a bad `tz`."""
    tz = periods.zone(asked.tz).key
    verdict, by = await _plan(services, asked.question, tz, now)
    log.info("ask.planned", answered_by=by, verdict=type(verdict).__name__)
    if isinstance(verdict, Refused | Clarify):
        raise verdict.error()
    if (unclear := await check(services, tenant, verdict, now)) is not None:
        raise unclear.error()
    data = None
    if not asked.dry_run:
        data = await run(services, tenant, verdict, now)
        if isinstance(data, Clarify):
            raise data.error()
    return Asked(
        asked.question,
        verdict,
        explain(verdict),
        url_of(verdict),
        by,
        None if data is None else msgspec.Raw(data),  # type: ignore[arg-type]
    )


async def _plan(services: Services, question: str, tz: str, now: datetime) -> tuple[Verdict, str]:
    """The rules first; the model for what they leave open (never for a
    refusal: a refused question reaches no model)."""
    ruled = plan_question(question, tz, now)
    if isinstance(ruled, Refused) or (ruled is not None and not isinstance(ruled, Clarify)):
        return ruled, RULES
    if not services.llm.online:
        return ruled or OUTSIDE, RULES
    verdict, model = await model_plan(services.llm, question, tz, now)
    if not isinstance(verdict, Unanswered):
        return verdict, model
    # The model did not answer: the rules' question, else one of our own.
    if ruled is None:
        return Clarify(("question",), f"{verdict.reason}; rephrase the question."), RULES
    return Clarify(ruled.missing, f"{ruled.reason} ({verdict.reason}.)"), RULES
