"""What POST /v1/ask takes and answers, and the two ways a question is not
answered: refused (outside the served reads) or to clarify (something is
missing or does not exist). Both are 422 problem documents carrying
`refused` or `clarify` (api.edge.problems.Unprocessable)."""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from msgspec import Meta

from api.ask.plans import Plan
from api.edge.problems import Unprocessable
from api.shapes import TEXT_PATTERN, Struct

MAX_QUESTION_CHARS = 500


class AskIn(Struct, frozen=True):
    question: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_QUESTION_CHARS,
            pattern=TEXT_PATTERN,
            description="A question about the served reads, in plain English",
        ),
    ]
    tz: Annotated[
        str, Meta(description="IANA time zone of relative dates (today, last week, ...)")
    ] = "UTC"
    dry_run: Annotated[bool, Meta(description="Return the plan without running it")] = False


class Asked(Struct):
    question: str
    plan: Plan
    explanation: Annotated[str, Meta(description="The plan in plain English")]
    url: Annotated[str, Meta(description="The GET request that returns the same data")]
    answered_by: Annotated[str, Meta(description="`rules`, or the name of the model")]
    # Documented as the object it is; set to the GET's encoded answer
    # (msgspec.Raw), spliced in as it was encoded.
    data: Annotated[
        dict[str, Any] | None,
        Meta(description="Exactly what the GET request answers; null for a dry run"),
    ] = None


class Refused(NamedTuple):
    """A question outside the served reads: a write, another tenant, an
    injected instruction, or anything else."""

    reason: str

    def error(self) -> Unprocessable:
        return Unprocessable(
            f"This question is refused: {self.reason}",
            field="question",
            extra={"refused": {"reason": self.reason}},
        )


class Clarify(NamedTuple):
    """A question about the served reads that misses something (`missing`:
    plan fields) or names something that does not exist."""

    missing: tuple[str, ...]
    reason: str

    def error(self) -> Unprocessable:
        return Unprocessable(
            f"The question needs clarifying: {self.reason}",
            field="question",
            extra={"clarify": {"missing": list(self.missing), "reason": self.reason}},
        )


# What a planner gives for a question.
Verdict = Plan | Refused | Clarify
