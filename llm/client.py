"""Analyse one utterance with an OpenAI-compatible chat model, within limits.

`LlmClient.analyze(text)` always returns an `InsightResult`: an analysis
with its provenance, or `parse_status="failed"` with a reason. LLM faults
never raise; they become data.

The pieces: the prompt (`llm.analysis.build_messages`); one completion under
the shared rate limit, with retries, backoff and an overall deadline
(`llm.calls.Caller`, whose docstring states the rate guarantee); reading the
reply (`llm.parsing.parse_reply`); and the offline analyzer
(`llm.offline.OfflineAnalyzer`) when no model is configured.

Build the client inside the event loop that will use it: its `Caller` belongs
to that loop (`llm.calls` says why).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog
from openai.types.chat import ChatCompletion
from prometheus_client import Counter

from llm.analysis import PROMPT_VERSION, Analysis, ParseStatus, build_messages
from llm.calls import Caller, check_settings
from llm.offline import OFFLINE_MODEL, OfflineAnalyzer
from llm.parsing import parse_reply

if TYPE_CHECKING:
    import redis.asyncio

    from runtime.settings import LlmSettings

log = structlog.get_logger(__name__)

LLM_FAILURES: Final = Counter(
    "utterstream_llm_failures", "Utterances whose analysis failed, by reason", ["reason"]
)


class InsightResult(msgspec.Struct, frozen=True):
    """One utterance's analysis and where it came from. `analysis` is None
    and `reason` says why exactly when `parse_status` is "failed"."""

    analysis: Analysis | None
    parse_status: ParseStatus
    model: str
    prompt_version: str
    # HTTP requests sent to the model for this utterance (0 if the deadline
    # passed before one could be); 1 for the offline analyzer.
    attempts: int
    latency_ms: float
    reason: str | None = None


class ChatReply(msgspec.Struct, frozen=True):
    """The text of a reply, or why there is none."""

    text: str | None
    model: str
    attempts: int
    failure: str | None = None


class ToolCall(msgspec.Struct, frozen=True):
    """The tool a model called and its raw JSON arguments, or why there is
    none (`failure`: no completion at all; `name` None: no tool called)."""

    name: str | None
    arguments: str
    call_id: str
    model: str
    attempts: int
    failure: str | None = None


class LlmClient:
    def __init__(
        self,
        settings: LlmSettings,
        redis: redis.asyncio.Redis,
        *,
        limiter_prefix: str = "rl:",
        deadline_s: float | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 8.0,
    ) -> None:
        """`deadline_s` bounds one `analyze` call, waits included; by default
        every attempt may use its whole timeout."""
        check_settings(settings)
        self._settings = settings
        self._deadline_s = (
            settings.timeout_s * settings.max_attempts if deadline_s is None else deadline_s
        )
        self._offline = OfflineAnalyzer()
        self._caller = (
            Caller(
                settings,
                redis,
                limiter_prefix=limiter_prefix,
                backoff_base_s=backoff_base_s,
                backoff_cap_s=backoff_cap_s,
            )
            if settings.base_url and settings.model
            else None
        )

    async def __aenter__(self) -> LlmClient:
        await self.warm_up()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def warm_up(self) -> None:
        """Set up the HTTP stack before the first call (see `Caller.warm_up`)."""
        if self._caller is not None:
            await self._caller.warm_up()

    async def aclose(self) -> None:
        if self._caller is not None:
            await self._caller.aclose()

    @property
    def online(self) -> bool:
        """A model is configured (else answers come from offline code)."""
        return self._caller is not None

    async def analyze(self, text: str) -> InsightResult:
        started = time.monotonic()
        if self._caller is None:
            analysis = self._offline.analyze(text)
            return InsightResult(
                analysis, "strict", OFFLINE_MODEL, PROMPT_VERSION, 1, _ms_since(started)
            )
        outcome = await self._caller.call(build_messages(text), started + self._deadline_s)
        if outcome.completion is None:
            LLM_FAILURES.labels(outcome.failure_kind).inc()
            log.warning("llm.failed", reason=outcome.failure, attempts=outcome.attempts)
            return InsightResult(
                None,
                "failed",
                self._settings.model,
                PROMPT_VERSION,
                outcome.attempts,
                _ms_since(started),
                outcome.failure,
            )
        return self._read(outcome.completion, outcome.attempts, started)

    async def chat(self, messages: list[dict[str, str]]) -> ChatReply:
        """One JSON-mode completion for a prompt other than the insight (the
        exercises), under the same rate limit, retries and deadline. Needs a
        model: check `online` first."""
        if self._caller is None:
            raise RuntimeError("no model is configured: check `online` first")
        started = time.monotonic()
        outcome = await self._caller.call(messages, started + self._deadline_s)
        if outcome.completion is None:
            LLM_FAILURES.labels(outcome.failure_kind).inc()
            return ChatReply(None, self._settings.model, outcome.attempts, outcome.failure)
        return ChatReply(
            _text(outcome.completion),
            outcome.completion.model or self._settings.model,
            outcome.attempts,
        )

    async def call_tool(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ToolCall:
        """One completion that must call one of `tools`, under the same rate
        limit, retries and deadline as `analyze`. Needs a model: check
        `online` first."""
        if self._caller is None:
            raise RuntimeError("no model is configured: check `online` first")
        started = time.monotonic()
        outcome = await self._caller.call(messages, started + self._deadline_s, tools)
        if outcome.completion is None:
            LLM_FAILURES.labels(outcome.failure_kind).inc()
            return ToolCall(None, "", "", self._settings.model, outcome.attempts, outcome.failure)
        model = outcome.completion.model or self._settings.model
        choice = outcome.completion.choices[0] if outcome.completion.choices else None
        calls = (choice.message.tool_calls if choice else None) or []
        first = next((c for c in calls if c.type == "function"), None)
        if first is None:
            return ToolCall(None, _text(outcome.completion), "", model, outcome.attempts)
        return ToolCall(
            first.function.name, first.function.arguments, first.id, model, outcome.attempts
        )

    def _read(self, completion: ChatCompletion, attempts: int, started: float) -> InsightResult:
        parsed = parse_reply(_text(completion))
        if parsed.parse_status == "failed":
            LLM_FAILURES.labels("unparsable").inc()
            log.warning("llm.reply_unparsable", reason=parsed.reason, attempts=attempts)
        elif parsed.repairs:
            log.info("llm.reply_repaired", repairs=parsed.repairs)
        return InsightResult(
            parsed.analysis,
            parsed.parse_status,
            completion.model or self._settings.model,
            PROMPT_VERSION,
            attempts,
            _ms_since(started),
            parsed.reason,
        )


def _text(completion: ChatCompletion) -> str:
    choice = completion.choices[0] if completion.choices else None
    return (choice.message.content if choice else None) or ""


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
