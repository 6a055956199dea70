"""One chat completion from an OpenAI-compatible model, within limits.

What the `openai` client does: HTTP and connection pooling, the API key
header, request and response types, and each request's timeout. It is built
with `max_retries=0`, so every HTTP request it makes is one we asked for.

What `Caller` adds:
- Retries of 429, 5xx, timeouts and dropped connections (`llm.faults`), up
  to `max_attempts` and within an overall deadline, with exponential backoff
  and full jitter; a `retry-after-ms` or `Retry-After` header replaces the
  backoff. Other 4xx fail at once. Every attempt is counted.
- A call rate shared by every process (see below), and at most
  `max_concurrency` calls in flight per caller.
- JSON mode (`response_format={"type": "json_object"}`); a server that
  answers 400 to it is asked again without, once, and if that works the
  caller stops sending it.

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

Build the caller inside the event loop that will use it: the Redis client,
the limiter and the semaphore belong to that loop.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
import openai
import structlog
from aiolimiter import AsyncLimiter
from openai.types.chat import ChatCompletion
from prometheus_client import Counter

from llm.faults import Fault, deadline_reached, exhausted, fault_of
from runtime.ratelimit import RedisRateLimiter, decide

if TYPE_CHECKING:
    import redis.asyncio

    from runtime.settings import LlmSettings

log = structlog.get_logger(__name__)

LLM_CALLS: Final = Counter(
    "utterstream_llm_calls", "HTTP calls to the LLM, by outcome", ["outcome"]
)
LLM_RETRIES: Final = Counter("utterstream_llm_retries", "LLM calls repeated, by cause", ["cause"])

RATE_KEY: Final = "llm:calls"
# One token deep: the tightest bucket, and the one that makes the guarantee
# in the module docstring hold for every window, not just on average.
RATE_BURST: Final = 1
_JSON_MODE: Final = {"type": "json_object"}


class Outcome(msgspec.Struct, frozen=True):
    """A completion, or why there is none (`failure`, and `failure_kind`
    for metrics), after `attempts` HTTP requests."""

    attempts: int
    completion: ChatCompletion | None = None
    failure: str | None = None
    failure_kind: str | None = None


def check_settings(settings: LlmSettings) -> None:
    """Raise ValueError for limits no call could work within."""
    # Caught at start-up, not later as a ZeroDivisionError or a semaphore
    # that never lets a call through.
    if settings.max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {settings.max_attempts}")
    if settings.max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {settings.max_concurrency}")
    if not (settings.rate_per_s > 0 and math.isfinite(settings.rate_per_s)):
        raise ValueError(f"rate_per_s must be a positive number, not {settings.rate_per_s}")


class Caller:
    def __init__(
        self,
        settings: LlmSettings,
        redis: redis.asyncio.Redis,
        *,
        limiter_prefix: str,
        backoff_base_s: float,
        backoff_cap_s: float,
    ) -> None:
        check_settings(settings)
        self._settings = settings
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._openai = openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key,
            timeout=settings.timeout_s,
            max_retries=0,
        )
        # Resolved now: the client imports its resources on first access,
        # which would otherwise block the event loop inside the first call.
        self._completions = self._openai.chat.completions
        self._shared = RedisRateLimiter(redis, prefix=limiter_prefix)
        self._local = AsyncLimiter(1, 1 / settings.rate_per_s)
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._json_mode = True

    async def warm_up(self) -> None:
        """Get the HTTP stack's one-time set-up (lazy imports, the first
        connection) done with GET /models, before any rate token is taken.

        Done inside the first call instead, it blocks the event loop for
        ~100 ms after that call's token was granted, and the calls granted
        meanwhile reach the server bunched together. A failure here is only
        logged: the calls that follow report their own faults.
        """
        try:
            await self._openai.models.list(timeout=self._settings.timeout_s)
        except openai.APIError as error:
            log.warning("llm.warm_up_failed", error=str(error))

    async def aclose(self) -> None:
        await self._openai.close()

    async def call(
        self,
        messages: list[dict[str, Any]],
        deadline: float,
        tools: list[dict[str, Any]] | None = None,
    ) -> Outcome:
        """One completion, retried as the module docstring says, with every
        wait and request over by `deadline` (a `time.monotonic()` time).
        With `tools`, the model must call one of them (no JSON mode)."""
        json_mode = self._json_mode and tools is None
        fault: Fault | None = None
        attempts = 0
        for attempts in range(1, self._settings.max_attempts + 1):
            async with self._slots:
                # Slot before token: a token taken while queueing for a slot
                # would let calls bunch up after the wait.
                if not await self._rate_token(deadline):
                    return _late(attempts - 1, fault, "waiting for the rate limit")
                try:
                    completion = await self._complete(messages, json_mode, deadline, tools)
                except openai.APIError as error:
                    fault = fault_of(error)
                else:
                    LLM_CALLS.labels("ok").inc()
                    if tools is None:
                        self._remember_json_mode(json_mode)
                    return Outcome(attempts, completion)
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
                return _late(attempts, fault, f"retrying in {delay:.1f}s")
            LLM_RETRIES.labels(fault.kind).inc()
            log.info("llm.retry", attempt=attempts, fault=fault.label, delay_s=round(delay, 3))
            await asyncio.sleep(delay)
        assert fault is not None  # max_attempts >= 1 and every path without a fault returned
        return Outcome(attempts, failure=exhausted(fault, attempts), failure_kind=fault.kind)

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
        self,
        messages: list[dict[str, Any]],
        json_mode: bool,
        deadline: float,
        tools: list[dict[str, Any]] | None,
    ) -> ChatCompletion:
        return await self._completions.create(
            model=self._settings.model,
            messages=messages,
            temperature=0,
            response_format=_JSON_MODE if json_mode else openai.omit,
            tools=tools if tools is not None else openai.omit,
            tool_choice="required" if tools is not None else openai.omit,
            timeout=max(0.001, min(self._settings.timeout_s, deadline - time.monotonic())),
        )

    def _remember_json_mode(self, json_mode: bool) -> None:
        if self._json_mode and not json_mode:
            self._json_mode = False
            log.warning("llm.json_mode_unsupported", base_url=self._settings.base_url)

    def _backoff(self, attempt: int, fault: Fault) -> float:
        if fault.retry_after_s is not None:
            return fault.retry_after_s
        # Full jitter: callers that failed together do not retry together.
        ceiling = min(self._backoff_cap_s, self._backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


def _late(attempts: int, fault: Fault | None, doing: str) -> Outcome:
    return Outcome(
        attempts, failure=deadline_reached(attempts, fault, doing), failure_kind="deadline"
    )
