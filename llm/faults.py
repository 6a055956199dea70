"""Why a call to the model got no completion, and what to do about it:
which faults are retried, how long the server asked us to wait, and the
words a failed analysis is reported with."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import msgspec
import openai

if TYPE_CHECKING:
    from httpx2 import Headers


class Fault(msgspec.Struct, frozen=True):
    """Why one attempt got no completion."""

    label: str  # for people: "429", "503", "timeout"
    kind: str  # for metrics: a small fixed set of values
    retryable: bool
    status: int | None = None
    retry_after_s: float | None = None
    detail: str = ""


def fault_of(error: openai.APIError) -> Fault:
    """429, 5xx, timeouts and dropped connections are retryable; other
    errors are not."""
    # Timeout first: APITimeoutError is a kind of APIConnectionError.
    if isinstance(error, openai.APITimeoutError):
        return Fault("timeout", "timeout", retryable=True)
    if isinstance(error, openai.APIConnectionError):
        return Fault("connection error", "connection", retryable=True)
    if isinstance(error, openai.APIStatusError):
        return _status_fault(error)
    return Fault(type(error).__name__, "client_error", retryable=False, detail=str(error))


def _status_fault(error: openai.APIStatusError) -> Fault:
    status = error.status_code
    if status == 429:
        kind = "rate_limited"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "client_error"
    retryable = kind != "client_error"
    return Fault(
        str(status),
        kind,
        retryable=retryable,
        status=status,
        # 503s carry Retry-After too; honour it wherever we retry.
        retry_after_s=retry_after_s(error.response.headers) if retryable else None,
        detail=_server_message(error),
    )


def _server_message(error: openai.APIStatusError) -> str:
    # The client passes the body's "error" object; its message is the
    # server's own words, without the client's "Error code: 503 - " prefix.
    body = error.body
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) and message else error.message


def retry_after_s(headers: Headers) -> float | None:
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


def exhausted(fault: Fault, attempts: int) -> str:
    """The reason for a call that ended on `fault` after `attempts`."""
    reason = f"{fault.label} after {attempts_text(attempts)}"
    return f"{reason}: {fault.detail}" if fault.detail else reason


def deadline_reached(attempts: int, fault: Fault | None, doing: str) -> str:
    """The reason for a call whose deadline passed while `doing`."""
    last = f", last fault {fault.label}" if fault else ""
    return f"deadline reached {doing} after {attempts_text(attempts)}{last}"


def attempts_text(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"
