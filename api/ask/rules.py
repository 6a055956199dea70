"""The rule-based planner: keywords and patterns for the common questions
("top 3 errors of learner-002 last week", "words practised per day this
month in Asia/Kolkata by learner-002", "negative insights yesterday"), with
relative dates resolved in the asker's time zone. Without a model it is the
whole answer.

`plan_question` gives a Plan, a Refused, a Clarify, or None when it does
not understand the question (the model, if any, may then try). Refusals are
decided here for every question, before any model sees it.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from api.ask.plans import (
    ErrorCountsPlan,
    InsightsPlan,
    LearningPlan,
    TopErrorsPlan,
    UtterancePlan,
)
from api.ask.shapes import Clarify, Refused, Verdict
from api.resources.errors import TOP_DEFAULT
from api.resources.insights import LIMIT_DEFAULT

# The sentiment a reader takes as negative or positive, as the offline
# analyzer's evaluation does (tests/llm/test_sentiment_gold.py).
NEUTRAL_BAND = 0.05
DEFAULT_DAYS = 7

# ---- refusals: each (pattern, reason), the first match wins

_REFUSALS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (
            r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instructions?|rules?|"
            r"prompts?|previous|above|everything)\b|\bsystem prompt\b|\byou are now\b|"
            r"\bjailbreak|\bdeveloper mode\b|\bpretend\b|\bact as\b|\bnew instructions?\b|"
            r"\b(reveal|print|show)\b.{0,20}\b(prompt|instructions|secrets?|config)",
            "it tries to change how questions are answered; ask about error counts, top "
            "errors, words practised, insights or one utterance",
        ),
        (
            r"\b(tenants?|api[ _-]?keys?|keys?|bearer|tokens?|passwords?|credentials?|secrets?|"
            r"(another|other|others'?|every|all|different)\s+(accounts?|customers?|"
            r"organi[sz]ations?|companies|company|schools?|clients?|apps?|tenants?)|"
            r"everyone'?s|cross[- ]account)\b",
            "answers only ever cover the learners of your own API key's tenant",
        ),
        (
            r"\b(delete[sd]?|deleting|remove[sd]?|erase[sd]?|wipe|purge|drop|truncate|insert|"
            r"update|upsert|modify|alter|edit|overwrite|reset|create|add|rename|grant|revoke|"
            r"replace|destroy|clear|undo|restore|merge|move|copy|import|upload|write|set|"
            r"change|mark|post|put|patch|generate|send|email|notify)\b",
            "it asks to change or send data; questions can only read error counts, top "
            "errors, words practised, insights or one utterance",
        ),
        (
            r"\b(select|cql|sql|cqlsh|keyspaces?|tables?|schema|allow\s+filtering|"
            r"union|join|query\s+language|database|redis|cassandra)\b|;",
            "no query is ever written from a question; ask in plain words about error "
            "counts, top errors, words practised, insights or one utterance",
        ),
    )
)

# ---- what the question asks about

_ID = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
_UTTERANCE = re.compile(rf"\butterance\s+(?:id\s+)?[\"'`]?({_ID})", re.IGNORECASE)
_INSIGHTS = re.compile(
    r"\b(insights?|sentiments?|positive|negative|neutral|moods?|topics?|confidence|"
    r"happy|unhappy|sad)\b",
    re.IGNORECASE,
)
_ERRORS = re.compile(r"\b(errors?|mistakes?)\b", re.IGNORECASE)
_TOP = re.compile(
    r"\b(top|most\s+(frequent|common|often|repeated)|biggest|main|worst|commonest|"
    r"frequent)\b",
    re.IGNORECASE,
)
_LEARNING = re.compile(
    r"\b(words?|practi[cs]e[sd]?|practi[cs]ing|learning|learned|learnt|entries|"
    r"vocabulary\s+(size|growth|learned))\b",
    re.IGNORECASE,
)
# Other things a question may be about: then it is vague, not outside.
_DOMAIN = re.compile(
    r"\b(learners?|students?|users?|progress|doing|performance|activity|utterances?)\b",
    re.IGNORECASE,
)

# ---- learners

_LEARNER_NAMED = re.compile(
    rf"\b(?:learner|user|student)(?:\s+id)?\s*[:=#]?\s+[\"'`]?({_ID})", re.IGNORECASE
)
# An id written on its own: letters, then separated parts, one with a digit
# (learner-002, u-1a2b3c); dates and zone names never match.
_LEARNER_BARE = re.compile(
    r"(?<![\w/.:@-])([A-Za-z][A-Za-z0-9]*(?:[-_.:@][A-Za-z0-9]+)+)(?![\w/-])"
)
_NOT_IDS = frozenset(
    [
        "the",
        "a",
        "an",
        "s",
        "of",
        "for",
        "in",
        "on",
        "with",
        "who",
        "whose",
        "that",
        "this",
        "last",
        "and",
        "errors",
        "error",
        "mistakes",
        "mistake",
        "words",
        "word",
        "learning",
        "progress",
        "insights",
        "insight",
        "id",
        "ids",
        "has",
        "have",
        "had",
        "did",
        "do",
        "does",
        "is",
        "was",
        "per",
        "by",
    ]
)

# ---- periods and numbers

_NUMBERS = {
    word: n
    for n, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        ]
    )
}
_NUMBER = r"(\d+|" + "|".join(_NUMBERS) + r")"
_ISO_DAY = r"(\d{4}-\d{2}-\d{2})"
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name} | {
    name.lower(): i for i, name in enumerate(calendar.month_abbr) if name
}
_MONTH = re.compile(
    r"\b(?:in|during|for)\s+(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\b"
    r"(?:\s+(\d{4}))?",
    re.IGNORECASE,
)
_WINDOWS = (
    ("minute", r"\b(per|each|every|by(\s+the)?|a)\s+minute\b|\bminutely\b|\bminute[- ]by[- ]"),
    ("hour", r"\b(per|each|every|by(\s+the)?|an?)\s+hour\b|\bhourly\b|\bhour[- ]by[- ]"),
    ("day", r"\b(per|each|every|by(\s+the)?|a)\s+day\b|\bdaily\b|\bday[- ]by[- ]"),
    ("week", r"\b(per|each|every|by(\s+the)?|a)\s+week\b|\bweekly\b|\bweek[- ]by[- ]"),
    ("month", r"\b(per|each|every|by(\s+the)?|a)\s+month\b|\bmonthly\b|\bmonth[- ]by[- ]"),
)
_ZONE = re.compile(r"\b(UTC|[A-Z][A-Za-z_]+(?:/[A-Z][A-Za-z0-9_+-]+)+)\b")


class Span(NamedTuple):
    """A range of the question: `start` and `end` as GET parameters (a date,
    or an RFC 3339 instant)."""

    start: str
    end: str


def plan_question(question: str, tz: str, now: datetime) -> Verdict | None:
    """The plan of `question` asked in the zone `tz` (a valid IANA name) at `now`."""
    for pattern, reason in _REFUSALS:
        if pattern.search(question):
            return Refused(reason)
    zone_name = _zone(question) or tz
    if (named := _UTTERANCE.search(question)) and _looks_like_id(named[1]):
        return UtterancePlan(utterance_id=named[1])
    learners = _learners(question)
    if len(learners) > 1:
        return Clarify(("user_id",), f"ask about one learner at a time, not {len(learners)}.")
    learner = learners[0] if learners else None
    try:
        today = now.astimezone(ZoneInfo(zone_name)).date()
    except (ValueError, KeyError):
        return Clarify(("tz",), f"{zone_name!r} is not an IANA time zone name.")
    return _operation(question, learner, zone_name, today, now)


def _operation(
    question: str, learner: str | None, zone: str, today: date, now: datetime
) -> Verdict | None:
    if _INSIGHTS.search(question):
        return _insights(question, learner, zone, today, now)
    errors = _ERRORS.search(question)
    if errors or _LEARNING.search(question):
        if learner is None:
            return Clarify(("user_id",), "which learner? Name one by its id, e.g. learner-002.")
        if errors and _TOP.search(question):
            return _top(question, learner, zone, today, now)
        if errors:
            return _error_counts(question, learner, zone, today, now)
        return _learning(question, learner, zone, today, now)
    if learner is not None or _DOMAIN.search(question):
        return Clarify(
            ("operation",),
            "what about it? Ask for error counts, top errors, words practised, insights "
            "or one utterance.",
        )
    return None


def _top(question: str, learner: str, zone: str, today: date, now: datetime) -> Verdict:
    span = _span(question, today, now)
    return TopErrorsPlan(
        user_id=learner,
        limit=_top_limit(question),
        since=None if span is None else span.start,
        tz=zone,
    )


def _error_counts(question: str, learner: str, zone: str, today: date, now: datetime) -> Verdict:
    window = _window(question) or "day"
    if window == "week":
        return Clarify(("window",), "error counts come per minute, hour, day or month, not week.")
    span = _span(question, today, now) or _default_span(today)
    category, subcategory = _labels(question)
    return ErrorCountsPlan(
        user_id=learner,
        window=window,
        from_=span.start,
        to=span.end,
        tz=zone,
        category=category,
        subcategory=subcategory,
    )


def _learning(question: str, learner: str, zone: str, today: date, now: datetime) -> Verdict:
    granularity = _window(question) or "day"
    if granularity in ("minute"):
        return Clarify(
            ("granularity",), "words practised come per day, week or month, not per hour."
        )
    span = _span(question, today, now) or _default_span(today)
    return LearningPlan(
        user_id=learner, granularity=granularity, from_=span.start, to=span.end, tz=zone
    )


def _insights(question: str, learner: str | None, zone: str, today: date, now: datetime) -> Verdict:
    span = _span(question, today, now) or _default_span(today)
    low, high = _sentiment(question)
    limit = re.search(rf"\b(?:first|top|latest|last)\s+{_NUMBER}\s+insights?\b", question, re.I)
    return InsightsPlan(
        from_=span.start,
        to=span.end,
        tz=zone,
        min_confidence=_bound(question, r"confidence", r"(?:above|over|at least|>=?|of)") or 0.0,
        sentiment_min=low,
        sentiment_max=high,
        user_id=learner,
        topic=_topic(question),
        limit=_number(limit[1]) if limit else LIMIT_DEFAULT,
    )


# ---- pieces of a question


def _zone(question: str) -> str | None:
    found = _ZONE.search(question)
    return found[1] if found else None


def _looks_like_id(word: str) -> bool:
    return word.lower() not in _NOT_IDS and any(c.isdigit() or c in "-_.:@" for c in word)


def _learners(question: str) -> list[str]:
    """The learner ids the question names, in order, once each."""
    found = [m[1] for m in _LEARNER_NAMED.finditer(question) if m[1].lower() not in _NOT_IDS]
    found += [
        m[1]
        for m in _LEARNER_BARE.finditer(question)
        if any(c.isdigit() for c in m[1]) and not _ZONE.fullmatch(m[1])
    ]
    return list(dict.fromkeys(found))


def _window(question: str) -> str | None:
    for window, pattern in _WINDOWS:
        if re.search(pattern, question, re.IGNORECASE):
            return window
    return None


def _top_limit(question: str) -> int:
    asked = re.search(rf"\b(?:top|the|my|first)\s+{_NUMBER}\b", question, re.I) or re.search(
        rf"(?<![\w.:@-]){_NUMBER}\s+(?:most|biggest|main|worst|top|commonest|frequent)\b",
        question,
        re.I,
    )
    if asked:
        return _number(asked[1])
    # "the most common mistake": one.
    singular = re.search(r"\b(error|mistake)\b(?!s)", question, re.I)
    return (
        1 if singular and not re.search(r"\b(errors|mistakes)\b", question, re.I) else TOP_DEFAULT
    )


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]


def _labels(question: str) -> tuple[str | None, str | None]:
    """The error category and subcategory asked for: "grammar errors",
    "category grammar", "subcategory past tense"."""
    subcategory = re.search(
        r"\bsub-?category\s+[\"']?([a-z][a-z -]*?)[\"']?(?=\s+(?:errors?|mistakes?|per|each|"
        r"by|for|of|in|on|since|from|this|last|today|yesterday|hourly|daily|monthly)\b|[?.!,]|$)",
        question,
        re.I,
    )
    category = re.search(r"(?<!sub)(?<!sub-)\bcategory\s+[\"']?([a-z][a-z-]*)", question, re.I)
    if category is None:
        category = re.search(r"\b([a-z][a-z-]*)\s+(?:errors?|mistakes?)\b", question, re.I)
        if category and category[1].lower() in _NOT_LABELS:
            category = None
    return (
        category[1].lower() if category else None,
        subcategory[1].strip().lower() if subcategory else None,
    )


_NOT_LABELS = frozenset(
    [
        "top",
        "my",
        "the",
        "their",
        "his",
        "her",
        "its",
        "all",
        "many",
        "much",
        "frequent",
        "common",
        "most",
        "of",
        "any",
        "how",
        "which",
        "what",
        "daily",
        "hourly",
        "monthly",
        "minutely",
        "weekly",
        "total",
        "count",
        "counts",
        "number",
        "main",
        "biggest",
        "worst",
        "commonest",
        "repeated",
        "latest",
        "recent",
        "new",
        "old",
        "past",
        "learner",
        "user",
        "student",
        "s",
    ]
)


def _sentiment(question: str) -> tuple[float, float]:
    low = _bound(question, r"sentiment", r"(?:above|over|at least|>=?)")
    high = _bound(question, r"sentiment", r"(?:below|under|at most|<=?)")
    if low is not None or high is not None:
        return (-1.0 if low is None else low), (1.0 if high is None else high)
    if re.search(r"\b(negative|unhappy|sad)\b", question, re.I):
        return -1.0, -NEUTRAL_BAND
    if re.search(r"\b(positive|happy)\b", question, re.I):
        return NEUTRAL_BAND, 1.0
    if re.search(r"\bneutral\b", question, re.I):
        return -NEUTRAL_BAND, NEUTRAL_BAND
    return -1.0, 1.0


def _bound(question: str, subject: str, relation: str) -> float | None:
    found = re.search(
        rf"\b{subject}\s+(?:is\s+|of\s+)?{relation}\s*(-?\d*\.?\d+)", question, re.IGNORECASE
    )
    return float(found[1]) if found else None


def _topic(question: str) -> str | None:
    found = re.search(r"\b(?:topic of|on the topic of|about|topic)\s+[\"']?([a-z][a-z ]*?)[\"']?"
                      r"(?=\s+(?:for|of|from|by|in|on|since|this|last|today|yesterday|with|"
                      r"between|during)\b|[?.!,]|$)", question, re.I)  # fmt: skip
    return found[1].strip().lower() if found else None


# ---- dates, resolved in the asker's zone


def _span(question: str, today: date, now: datetime) -> Span | None:
    """The range the question names, or None when it names none."""
    q = question.lower()
    for finder in (_explicit, _relative, _counted, _named_month):
        if (span := finder(q, today, now)) is not None:
            # "since yesterday", "since last week": up to now.
            if re.search(r"\bsince\s+(yesterday|last|this|the)\b", q):
                return span._replace(end=(today + timedelta(days=1)).isoformat())
            return span
    return None


def _default_span(today: date) -> Span:
    return _days(today - timedelta(days=DEFAULT_DAYS - 1), today + timedelta(days=1))


def _explicit(q: str, today: date, _now: datetime) -> Span | None:
    if m := re.search(
        rf"\b(?:from|between)\s+{_ISO_DAY}\s+(?:to|and|until|till|through)\s+{_ISO_DAY}", q
    ):
        first, last = _iso(m[1]), _iso(m[2])
        if first is None or last is None:
            return None
        return _days(first, last + timedelta(days=1))
    if m := re.search(rf"\bsince\s+{_ISO_DAY}", q):
        first = _iso(m[1])
        return None if first is None else _days(first, today + timedelta(days=1))
    if m := re.search(rf"\b{_ISO_DAY}\b", q):
        day = _iso(m[1])
        return None if day is None else _days(day, day + timedelta(days=1))
    return None


def _relative(q: str, today: date, _now: datetime) -> Span | None:
    monday = today - timedelta(days=today.weekday())
    month = today.replace(day=1)
    last_month = (month - timedelta(days=1)).replace(day=1)
    named = (
        (r"\btoday\b", today, today + timedelta(days=1)),
        (r"\byesterday\b", today - timedelta(days=1), today),
        (r"\bthis week\b", monday, monday + timedelta(days=7)),
        (r"\b(last|previous|past) week\b", monday - timedelta(days=7), monday),
        (r"\bthis month\b", month, _next_month(month)),
        (r"\b(last|previous|past) month\b", last_month, month),
        (r"\bthis year\b", today.replace(month=1, day=1), today.replace(year=today.year + 1, month=1, day=1)),
        (r"\b(last|previous|past) year\b", today.replace(year=today.year - 1, month=1, day=1), today.replace(month=1, day=1)),
    )  # fmt: skip
    for pattern, first, end in named:
        if re.search(pattern, q):
            return _days(first, end)
    return None


def _counted(q: str, today: date, now: datetime) -> Span | None:
    m = re.search(rf"\b(?:last|past|previous)\s+{_NUMBER}\s+(hour|day|week|month)s?\b", q)
    if m is None:
        return None
    n, unit = _number(m[1]), m[2]
    tomorrow = today + timedelta(days=1)
    if unit == "hour":
        end = now.replace(second=0, microsecond=0)
        start = end - timedelta(hours=n)
        return Span(start.isoformat(), end.isoformat())
    if unit == "month":
        first = _months_before(today, n) + timedelta(days=1)
    else:
        first = tomorrow - timedelta(days=n * (7 if unit == "week" else 1))
    return _days(first, tomorrow)


def _named_month(q: str, today: date, _now: datetime) -> Span | None:
    m = _MONTH.search(q)
    if m is None:
        return None
    number = _MONTHS[m[1].lower()]
    year = int(m[2]) if m[2] else (today.year if number <= today.month else today.year - 1)
    first = date(year, number, 1)
    return _days(first, _next_month(first))


def _days(first: date, end: date) -> Span:
    return Span(first.isoformat(), end.isoformat())


def _iso(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def _next_month(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def _months_before(day: date, n: int) -> date:
    months = day.year * 12 + day.month - 1 - n
    year, month = divmod(months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))
