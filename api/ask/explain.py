"""The plan in plain English, for the person who asked: what is counted,
for whom, over which range and in which time zone. Written from the plan
alone, so it says what runs, whichever planner made it."""

from __future__ import annotations

from api.ask.plans import (
    ErrorCountsPlan,
    InsightsPlan,
    LearningPlan,
    Plan,
    TopErrorsPlan,
    UtterancePlan,
)

_PERIODS = {"minute": "minute", "hour": "hour", "day": "local day", "week": "ISO week (Monday to Sunday)", "month": "local month"}  # fmt: skip


def explain(plan: Plan) -> str:
    match plan:
        case ErrorCountsPlan():
            labels = _labels(plan.category, plan.subcategory)
            return (
                f"Error counts{labels} of learner {plan.user_id} per {_PERIODS[plan.window]}, "
                f"{_range(plan.from_, plan.to, plan.tz)}."
            )
        case TopErrorsPlan():
            which = (
                "most frequent error" if plan.limit == 1 else f"{plan.limit} most frequent errors"
            )
            since = (
                "of all time"
                if plan.since is None
                else f"from the start of {plan.since} in {plan.tz} until now"
            )
            return f"The {which} (category, subcategory) of learner {plan.user_id}, {since}."
        case LearningPlan():
            return (
                f"Entries and words practised by learner {plan.user_id} per "
                f"{_PERIODS[plan.granularity]}, {_range(plan.from_, plan.to, plan.tz)}; "
                "empty periods included, with zeros."
            )
        case InsightsPlan():
            return _insights(plan)
        case UtterancePlan():
            return (
                f"Utterance {plan.utterance_id}: its text, errors, processing status and insight."
            )


def _range(start: str, end: str, tz: str) -> str:
    return f"from {start} (included) to {end} (excluded), dates in {tz}"


def _labels(category: str | None, subcategory: str | None) -> str:
    named = [f"{kind} {label!r}" for kind, label in (("category", category), ("subcategory", subcategory)) if label]  # fmt: skip
    return f" ({', '.join(named)} only)" if named else ""


def _insights(plan: InsightsPlan) -> str:
    whose = f" of learner {plan.user_id}" if plan.user_id else ""
    topic = f" about {plan.topic!r}" if plan.topic else ""
    filters = []
    if (plan.sentiment_min, plan.sentiment_max) != (-1.0, 1.0):
        filters.append(f"sentiment from {plan.sentiment_min:g} to {plan.sentiment_max:g}")
    if plan.min_confidence:
        filters.append(f"confidence at least {plan.min_confidence:g}")
    having = f", with {' and '.join(filters)}" if filters else ""
    return (
        f"Up to {plan.limit} insights{whose}{topic} of utterances "
        f"{_range(plan.from_, plan.to, plan.tz)}{having}, oldest first."
    )
