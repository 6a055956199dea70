"""Talking to the API: learners and conversations first, then the batches,
each retried with its Idempotency-Key until its deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from loader.lines import Line, idempotency_key

RETRY_STATUSES = {409, 429, 502, 503, 504}
MAX_BACKOFF_S = 10.0
_encoder = msgspec.json.Encoder()


@dataclass
class Outcome:
    accepted: int = 0
    duplicates: int = 0
    replayed: int = 0
    rejected: int = 0
    undelivered: int = 0
    batches: int = 0
    replayed_batches: int = 0
    retries: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    learners: Counter[str] = field(default_factory=Counter)
    # One entry per batch that was not delivered: its lines and why.
    not_delivered: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NoAnswer:
    """post() gave up: the deadline passed with only retry-later answers
    (or none); `reason` says which was the last."""

    reason: str


class Fatal(Exception):
    """The whole load must stop (e.g. the API key is refused)."""


async def post(
    client: httpx.AsyncClient, path: str, body: bytes, key: str, deadline_s: float, outcome: Outcome
) -> httpx.Response | NoAnswer:
    """POST with retries under one Idempotency-Key; NoAnswer, with the last
    status or error, when the deadline passed without an answer that is not
    worth retrying."""
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    give_up = time.monotonic() + deadline_s
    attempt = 0
    last = ""
    while True:
        attempt += 1
        wait = min(MAX_BACKOFF_S, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
        try:
            response = await client.post(path, content=body, headers=headers)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            response = None
            last = f"{type(exc).__name__}" + (f" ({exc})" if str(exc) else "")
        if response is not None:
            if response.status_code == 401:
                raise Fatal(f"the API refused the key: {_detail(response)}")
            if response.status_code not in RETRY_STATUSES or _is_conflict(response):
                return response
            last = _detail(response)
            retry_after = response.headers.get("Retry-After")
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                wait = float(retry_after) + random.uniform(0, 0.2)
        if time.monotonic() + wait > give_up:
            return NoAnswer(
                f"gave up after {attempt} attempt{'s' * (attempt > 1)} within the "
                f"{deadline_s:g} s retry deadline; last answer: {last}"
            )
        outcome.retries += 1
        await asyncio.sleep(wait)


def _is_conflict(response: httpx.Response) -> bool:
    """409 for "another request with this key is in flight" is retried; 409
    for a real conflict (an id taken by other details) is an answer."""
    return response.status_code == 409 and "request-in-flight" not in response.text


def _detail(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(problem, dict):
        return f"HTTP {response.status_code}: {problem.get('detail') or problem.get('title')}"
    return f"HTTP {response.status_code}"


async def create_learners(
    client: httpx.AsyncClient,
    lines: list[Line],
    concurrency: int,
    deadline_s: float,
    outcome: Outcome,
) -> None:
    users, conversations = _learners_of(lines)
    slots = asyncio.Semaphore(concurrency)

    async def create(kind: str, path: str, body: dict[str, Any]) -> None:
        raw = _encoder.encode(body)
        async with slots:
            response = await post(
                client, path, raw, idempotency_key(kind, raw), deadline_s, outcome
            )
        if isinstance(response, NoAnswer):
            outcome.learners[f"{kind}_failed"] += 1
            outcome.rejections.append({"create": kind, "body": body, "reason": response.reason})
        elif response.status_code == 201:
            outcome.learners[f"{kind}_ok"] += 1
        else:
            outcome.learners[f"{kind}_failed"] += 1
            outcome.rejections.append({"create": kind, "body": body, "reason": _detail(response)})

    await asyncio.gather(*(create("user", "/v1/users", u) for u in users.values()))
    await asyncio.gather(
        *(create("conversation", "/v1/conversations", c) for c in conversations.values())
    )


def _learners_of(
    lines: list[Line],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The bodies of POST /v1/users and /v1/conversations, by id: each from
    the first line that names it."""
    users: dict[str, dict[str, Any]] = {}
    conversations: dict[str, dict[str, Any]] = {}
    for line in lines:
        if line.body is None:
            continue
        uid, cid = line.body["user_id"], line.body["conversation_id"]
        if uid not in users:
            users[uid] = {
                "user_id": uid,
                "email": line.extras.get("user_email") or f"{uid}@learners.invalid",
                "name": line.extras.get("user_name") or uid,
            }
        if cid not in conversations:
            conversations[cid] = {"user_id": uid, "conversation_id": cid}
            if title := line.extras.get("conversation_title"):
                conversations[cid]["title"] = title
    return users, conversations


async def send_batches(
    client: httpx.AsyncClient,
    lines: list[Line],
    batch_size: int,
    concurrency: int,
    deadline_s: float,
    outcome: Outcome,
    advance: Any,
) -> None:
    ready = [line for line in lines if line.body is not None]
    batches = [ready[i : i + batch_size] for i in range(0, len(ready), batch_size)]
    queue: asyncio.Queue[list[Line]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            await _send_batch(client, batch, deadline_s, outcome)
            advance(len(batch))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(batches)) or 1)))


async def _send_batch(
    client: httpx.AsyncClient, batch: list[Line], deadline_s: float, outcome: Outcome
) -> None:
    body = _encoder.encode({"utterances": [line.body for line in batch]})
    response = await post(
        client, "/v1/utterances/batch", body, idempotency_key("batch", body), deadline_s, outcome
    )
    outcome.batches += 1
    if isinstance(response, NoAnswer):
        outcome.undelivered += len(batch)
        outcome.not_delivered.append(
            {
                "first_line": batch[0].number,
                "last_line": batch[-1].number,
                "lines": len(batch),
                "reason": response.reason,
            }
        )
        for line in batch:
            _record(outcome, line, None, f"not delivered: {response.reason}")
        return
    if response.status_code >= 300:
        reason = _detail(response)
        for line in batch:
            reject(outcome, line, response.status_code, f"the whole batch was refused: {reason}")
        return
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    outcome.replayed_batches += replayed
    for result in response.json()["results"]:
        line = batch[result["index"]]
        if result["status"] >= 400:
            reject(outcome, line, result["status"], result.get("detail") or result.get("error"))
        elif replayed:
            outcome.replayed += 1
        elif result.get("duplicate"):
            outcome.duplicates += 1
        else:
            outcome.accepted += 1


def reject(outcome: Outcome, line: Line, status: int | None, reason: str | None) -> None:
    outcome.rejected += 1
    _record(outcome, line, status, reason)


def _record(outcome: Outcome, line: Line, status: int | None, reason: str | None) -> None:
    outcome.rejections.append(
        {
            "line": line.number,
            "utterance_id": (line.body or {}).get("utterance_id"),
            "status": status,
            "reason": reason,
            "input": line.raw,
        }
    )
