"""Analyse one utterance with an OpenAI-compatible chat model, within limits.

`LlmClient.analyze(text)` always returns an `InsightResult`: an analysis
with its provenance, or `parse_status="failed"` with a reason. LLM faults
never raise; they become data.

What the `openai` client does: HTTP and connection pooling, the API key
header, request and response types, and each request's timeout. It is built
with `max_retries=0`, so every HTTP request it makes is one we asked for.

What this module adds:
- Retries of 429, 5xx, timeouts and dropped connections, up to
  `max_attempts` and within an overall deadline, with exponential backoff and
  full jitter; a `retry-after-ms` or `Retry-After` header replaces the
  backoff. Other 4xx fail at once. Every attempt is counted and reported.
- A call rate shared by every process (see below), and at most
  `max_concurrency` calls in flight per client.
- JSON mode (`response_format={"type": "json_object"}`); a server that
  answers 400 to it is asked again without, once, and if that works the
  client stops sending it.
- Reading the reply with `llm.analysis.parse_reply`.
- The offline analyzer when no model is configured.

The rate guarantee. Before each HTTP request (first attempts and retries
alike) a call takes a token from one GCRA bucket in Redis
(`runtime.ratelimit`, key "llm:calls"), refilled at `rate_per_s` and holding
`RATE_BURST = 1` token. With a burst of one, any two tokens granted, to any
process on any machine, are at least 1/rate_per_s apart on Redis's clock.
So a half-open window of T seconds holds at most ceil(T * rate_per_s)
grants: at most `rate_per_s` in any one second for a whole-number rate, and
`rate_per_s + RATE_BURST` in a closed one; the long-run average is at most
the rate. The server sees each call a send delay d after its grant, so its
windows can hold up to ceil((1 + max d - min d) * rate_per_s) calls: with
`warm_up()` done and a token taken only once a concurrency slot is held, d
varies by a few milliseconds and a server counts at most limit + burst.
A per-process `aiolimiter.AsyncLimiter` at the same rate, one token deep,
smooths each process's own calls, so a busy process waits locally instead of
polling Redis.

Redis unavailable: the shared bucket fails open (`runtime.ratelimit.decide` with
the "open" policy, counted in its fallback counter), leaving the
per-process limiter; the provider's 429s, which are retried, are then the
backstop.

Build the client inside the event loop that will use it: the Redis client,
the limiter and the semaphore belong to that loop.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final

import msgspec
import openai
import structlog
from aiolimiter import AsyncLimiter
from openai.types.chat import ChatCompletion
from prometheus_client import Counter

from llm.analysis import (
    OFFLINE_MODEL,
    PROMPT_VERSION,
    Analysis,
    OfflineAnalyzer,
    ParseStatus,
    build_messages,
    parse_reply,
)
from runtime.ratelimit import RedisRateLimiter, decide

if TYPE_CHECKING:
    import redis.asyncio
    from httpx2 import Headers

    from runtime.settings import LlmSettings

log = structlog.get_logger(__name__)

LLM_CALLS: Final = Counter(
    "utterstream_llm_calls", "HTTP calls to the LLM, by outcome", ["outcome"]
)
LLM_RETRIES: Final = Counter("utterstream_llm_retries", "LLM calls repeated, by cause", ["cause"])
LLM_FAILURES: Final = Counter(
    "utterstream_llm_failures", "Utterances whose analysis failed, by reason", ["reason"]
)

RATE_KEY: Final = "llm:calls"
# One token deep: the tightest bucket, and the one that makes the guarantee
# in the module docstring hold for every window, not just on average.
RATE_BURST: Final = 1
_JSON_MODE: Final = {"type": "json_object"}


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


class _Fault(msgspec.Struct, frozen=True):
    """Why one attempt got no completion."""

    label: str  # for people: "429", "503", "timeout"
    kind: str  # for metrics: a small fixed set of values
    retryable: bool
    status: int | None = None
    retry_after_s: float | None = None
    detail: str = ""


class _Outcome(msgspec.Struct, frozen=True):
    attempts: int
    completion: ChatCompletion | None = None
    failure: str | None = None
    failure_kind: str | None = None


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
        _check(settings)
        self._settings = settings
        self._deadline_s = (
            settings.timeout_s * settings.max_attempts if deadline_s is None else deadline_s
        )
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._offline = OfflineAnalyzer()
        self._openai = (
            openai.AsyncOpenAI(
                base_url=settings.base_url,
                api_key=settings.api_key,
                timeout=settings.timeout_s,
                max_retries=0,
            )
            if settings.base_url and settings.model
            else None
        )
        # Resolved now: the client imports its resources on first access,
        # which would otherwise block the event loop inside the first call.
        self._completions = self._openai.chat.completions if self._openai else None
        self._shared = RedisRateLimiter(redis, prefix=limiter_prefix)
        self._local = AsyncLimiter(1, 1 / settings.rate_per_s)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._json_mode = True

    async def __aenter__(self) -> LlmClient:
        await self.warm_up()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def warm_up(self) -> None:
        """Get the HTTP stack's one-time set-up (lazy imports, the first
        connection) done with GET /models, before any rate token is taken.

        Done inside the first call instead, it blocks the event loop for
        ~100 ms after that call's token was granted, and the calls granted
        meanwhile reach the server bunched together. A failure here is only
        logged: the calls that follow report their own faults.
        """
        if self._openai is None:
            return
        try:
            await self._openai.models.list(timeout=self._settings.timeout_s)
        except openai.APIError as error:
            log.warning("llm.warm_up_failed", error=str(error))

    async def aclose(self) -> None:
        if self._openai is not None:
            await self._openai.close()

    async def analyze(self, text: str) -> InsightResult:
        started = time.monotonic()
        if self._openai is None:
            analysis = self._offline.analyze(text)
            return InsightResult(
                analysis, "strict", OFFLINE_MODEL, PROMPT_VERSION, 1, _ms_since(started)
            )
        outcome = await self._call(build_messages(text), started + self._deadline_s)
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

    @property
    def online(self) -> bool:
        """A model is configured (else answers come from offline code)."""
        return self._openai is not None

    async def chat(self, messages: list[dict[str, str]]) -> ChatReply:
        """One JSON-mode completion for a prompt other than the insight (the
        exercises), under the same rate limit, retries and deadline. Needs a
        model: check `online` first."""
        started = time.monotonic()
        outcome = await self._call(messages, started + self._deadline_s)
        if outcome.completion is None:
            LLM_FAILURES.labels(outcome.failure_kind).inc()
            return ChatReply(None, self._settings.model, outcome.attempts, outcome.failure)
        choice = outcome.completion.choices[0] if outcome.completion.choices else None
        text = (choice.message.content if choice else None) or ""
        return ChatReply(text, outcome.completion.model or self._settings.model, outcome.attempts)

    def _read(self, completion: ChatCompletion, attempts: int, started: float) -> InsightResult:
        choice = completion.choices[0] if completion.choices else None
        parsed = parse_reply((choice.message.content if choice else None) or "")
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

    async def _call(self, messages: list[dict[str, str]], deadline: float) -> _Outcome:
        json_mode = self._json_mode
        fault: _Fault | None = None
        attempts = 0
        for attempts in range(1, self._settings.max_attempts + 1):
            async with self._slots:
                # Slot before token: a token taken while queueing for a slot
                # would let calls bunch up after the wait.
                if not await self._rate_token(deadline):
                    return _deadline_outcome(attempts - 1, fault, "waiting for the rate limit")
                try:
                    completion = await self._complete(messages, json_mode, deadline)
                except openai.APIError as error:
                    fault = _fault(error)
                else:
                    LLM_CALLS.labels("ok").inc()
                    self._remember_json_mode(json_mode)
                    return _Outcome(attempts, completion)
            LLM_CALLS.labels(fault.kind).inc()
            if json_mode and fault.status == 400:
                # Maybe the server does not know response_format: ask once
                # without; only a success proves that was the problem.
                json_mode = False
                LLM_RETRIES.labels("json_mode_rejected").inc()
                continue
            if not fault.retryable or attempts == self._settings.max_attempts:
                break
            delay = self._backoff(attempts, fault)
            if time.monotonic() + delay >= deadline:
                return _deadline_outcome(attempts, fault, f"retrying in {delay:.1f}s")
            LLM_RETRIES.labels(fault.kind).inc()
            log.info("llm.retry", attempt=attempts, fault=fault.label, delay_s=round(delay, 3))
            await asyncio.sleep(delay)
        assert fault is not None  # max_attempts >= 1 and every path without a fault returned
        return _Outcome(attempts, failure=_exhausted(fault, attempts), failure_kind=fault.kind)

    async def _rate_token(self, deadline: float) -> bool:
        """Wait for this process's limiter, then for the shared bucket;
        False if that would pass the deadline."""
        if time.monotonic() >= deadline:
            return False
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                await self._local.acquire()
        except TimeoutError:
            return False
        while True:
            decision = await decide(
                self._shared, RATE_KEY, self._settings.rate_per_s, RATE_BURST, 1, "open"
            )
            if decision is None or decision.allowed:
                return True
            if time.monotonic() + decision.retry_after_s >= deadline:
                return False
            await asyncio.sleep(decision.retry_after_s)

    async def _complete(
        self, messages: list[dict[str, str]], json_mode: bool, deadline: float
    ) -> ChatCompletion:
        assert self._completions is not None
        return await self._completions.create(
            model=self._settings.model,
            messages=messages,
            temperature=0,
            response_format=_JSON_MODE if json_mode else openai.omit,
            timeout=max(0.001, min(self._settings.timeout_s, deadline - time.monotonic())),
        )

    def _remember_json_mode(self, json_mode: bool) -> None:
        if self._json_mode and not json_mode:
            self._json_mode = False
            log.warning("llm.json_mode_unsupported", base_url=self._settings.base_url)

    def _backoff(self, attempt: int, fault: _Fault) -> float:
        if fault.retry_after_s is not None:
            return fault.retry_after_s
        # Full jitter: callers that failed together do not retry together.
        ceiling = min(self._backoff_cap_s, self._backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


def _check(settings: LlmSettings) -> None:
    # Caught at start-up, not later as a ZeroDivisionError or a semaphore
    # that never lets a call through.
    if settings.max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {settings.max_attempts}")
    if settings.max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {settings.max_concurrency}")
    if not (settings.rate_per_s > 0 and math.isfinite(settings.rate_per_s)):
        raise ValueError(f"rate_per_s must be a positive number, not {settings.rate_per_s}")


def _fault(error: openai.APIError) -> _Fault:
    # Timeout first: APITimeoutError is a kind of APIConnectionError.
    if isinstance(error, openai.APITimeoutError):
        return _Fault("timeout", "timeout", retryable=True)
    if isinstance(error, openai.APIConnectionError):
        return _Fault("connection error", "connection", retryable=True)
    if isinstance(error, openai.APIStatusError):
        return _status_fault(error)
    return _Fault(type(error).__name__, "client_error", retryable=False, detail=str(error))


def _status_fault(error: openai.APIStatusError) -> _Fault:
    status = error.status_code
    if status == 429:
        kind = "rate_limited"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "client_error"
    retryable = kind != "client_error"
    return _Fault(
        str(status),
        kind,
        retryable=retryable,
        status=status,
        # 503s carry Retry-After too; honour it wherever we retry.
        retry_after_s=_retry_after_s(error.response.headers) if retryable else None,
        detail=_server_message(error),
    )


def _server_message(error: openai.APIStatusError) -> str:
    # The client passes the body's "error" object; its message is the
    # server's own words, without the client's "Error code: 503 - " prefix.
    body = error.body
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) and message else error.message


def _retry_after_s(headers: Headers) -> float | None:
    """retry-after-ms (OpenAI's, finer), else Retry-After in seconds or as
    an HTTP date; None when absent or unreadable."""
    candidates = (("retry-after-ms", 1000.0), ("retry-after", 1.0))
    for name, per_second in candidates:
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / per_second
        except ValueError:
            seconds = _seconds_until(value)
        if seconds is not None and math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _seconds_until(http_date: str) -> float | None:
    try:
        return parsedate_to_datetime(http_date).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _exhausted(fault: _Fault, attempts: int) -> str:
    reason = f"{fault.label} after {_attempts(attempts)}"
    return f"{reason}: {fault.detail}" if fault.detail else reason


def _deadline_outcome(attempts: int, fault: _Fault | None, doing: str) -> _Outcome:
    last = f", last fault {fault.label}" if fault else ""
    return _Outcome(
        attempts,
        failure=f"deadline reached {doing} after {_attempts(attempts)}{last}",
        failure_kind="deadline",
    )


def _attempts(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
