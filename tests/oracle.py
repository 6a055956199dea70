"""An independent recount of what the dataflows serve, from the base table.

It reads the utterances a test created straight from utterances_by_id (by
their ids: no ALLOW FILTERING) and recounts with plain datetime arithmetic
and zoneinfo, sharing no code with dataflows/, so a bug there cannot hide
in the comparison. `written_at` is the utterance's `received_at`: when the
API accepted it, which is also its feed entry's time.

Keys and values mirror the served rows:
- error_counts: (user_id, window, bucket, window_start, category,
  subcategory) -> (count, late_events), for windows minute, hour, day, month;
- error_totals: (user_id, category, subcategory) -> count;
- quarter_hours: (user_id, month, bucket_start) -> (entries, words, late_events);
- learning_periods: (user_id, local start date of the period) -> (entries,
  words), for day, week (ISO, from Monday) or month periods in an IANA zone.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cql.session import Db
from cql.utterances import UTTERANCES, UtteranceRow

ErrorKey = tuple[str, str, datetime, datetime, str, str]


def load_utterances(db: Db, tenant: str, utterance_ids: Iterable[str]) -> list[UtteranceRow]:
    statement = db.prepare(UTTERANCES.select(), idempotent=True)
    rows = []
    for utterance_id in sorted(set(utterance_ids)):
        row = db.session.execute(statement, (tenant, utterance_id)).one()
        assert row is not None, f"utterance {utterance_id} is not in utterances_by_id"
        rows.append(UTTERANCES.from_row(row))
    return rows


def _windows(ts: datetime) -> list[tuple[str, datetime, datetime, datetime]]:
    """(window, bucket, start, end) of the minute, hour and day around ts."""
    minute = ts.replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    day = hour.replace(hour=0)
    return [
        ("minute", day, minute, minute + timedelta(minutes=1)),
        ("hour", day.replace(day=1), hour, hour + timedelta(hours=1)),
        ("day", day.replace(month=1, day=1), day, day + timedelta(days=1)),
    ]


def error_counts(
    utterances: Iterable[UtteranceRow], late_after_s: float
) -> dict[ErrorKey, tuple[int, int]]:
    late_after = timedelta(seconds=late_after_s)
    counts: Counter[ErrorKey] = Counter()
    late: Counter[ErrorKey] = Counter()
    for u in utterances:
        for category, subcategory in u.errors or []:
            for window, bucket, start, end in _windows(u.ts):
                key = (u.user_id, window, bucket, start, category, subcategory)
                counts[key] += 1
                late[key] += u.received_at > end + late_after
    # Month rows are the sums of their day rows, late events included.
    for day_key, count in list(counts.items()):
        user_id, window, _year, start, category, subcategory = day_key
        if window == "day":
            key = (
                user_id,
                "month",
                datetime(1970, 1, 1),
                start.replace(day=1),
                category,
                subcategory,
            )
            counts[key] += count
            late[key] += late[day_key]
    return {key: (counts[key], late[key]) for key in counts}


def error_totals(utterances: Iterable[UtteranceRow]) -> dict[tuple[str, str, str], int]:
    return dict(
        Counter(
            (u.user_id, category, subcategory)
            for u in utterances
            for category, subcategory in u.errors or []
        )
    )


def error_points(utterances: Iterable[UtteranceRow]) -> set[tuple[str, str, int]]:
    """(user_id, utterance_id, point index) of every error point: the facts."""
    return {(u.user_id, u.utterance_id, i) for u in utterances for i in range(len(u.errors or []))}


def quarter_hours(
    utterances: Iterable[UtteranceRow], late_after_s: float
) -> dict[tuple[str, datetime, datetime], tuple[int, int, int]]:
    late_after = timedelta(seconds=late_after_s)
    totals: dict[tuple[str, datetime, datetime], list[int]] = defaultdict(lambda: [0, 0, 0])
    for u in utterances:
        start = u.ts.replace(minute=u.ts.minute // 15 * 15, second=0, microsecond=0)
        month = start.replace(day=1, hour=0, minute=0)
        total = totals[(u.user_id, month, start)]
        total[0] += 1
        total[1] += u.words_learned
        total[2] += u.received_at > start + timedelta(minutes=15) + late_after
    return {key: (e, w, late) for key, (e, w, late) in totals.items()}


def period_start(moment: datetime, granularity: str, tz: str) -> date:
    """The local date a day, ISO week or month period containing the UTC
    instant `moment` (naive UTC) starts on, in zone `tz`."""
    local = moment.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).date()
    if granularity == "day":
        return local
    if granularity == "week":
        return local - timedelta(days=local.weekday())
    if granularity == "month":
        return local.replace(day=1)
    raise ValueError(f"unknown granularity {granularity!r}")


def local_midnight(day: date, tz: str) -> datetime:
    """The instant (aware) a local date starts in zone `tz`."""
    return datetime.combine(day, time(), ZoneInfo(tz))


def learning_periods(
    utterances: Iterable[UtteranceRow], granularity: str, tz: str
) -> dict[tuple[str, date], tuple[int, int]]:
    totals: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    for u in utterances:
        total = totals[(u.user_id, period_start(u.ts, granularity, tz))]
        total[0] += 1
        total[1] += u.words_learned
    return {key: (entries, words) for key, (entries, words) in totals.items()}
