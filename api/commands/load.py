"""Bulk loader: `ops/load FILE [--batch 500] [--concurrency 4] [--api URL] [--key KEY]`.

Imports utterances from JSON Lines (one object per line) or CSV (a header
row; `errors` as a JSON array or `category:subcategory;category:subcategory`)
through POST /v1/utterances/batch, after creating the learners and
conversations the file names.

Running it again imports nothing twice, whatever the batch size:
- every line gets an `utterance_id`; a line without one gets an id derived
  from its content, so the API's per-id claim makes a re-sent line a
  duplicate;
- every request's Idempotency-Key is derived from its body (the file's
  content and the batch's place in it), so a rerun with the same batch size
  replays the first answers instead of doing the work again;
- learners and conversations are created with their ids from the file; an
  existing one with the same details is fine.

Lines are checked against the API's own request shape (api.shapes) before
anything is sent, so one malformed line is rejected with its reason and the
rest still load. Rejected lines, with the reason, go to FILE.rejected.jsonl.

Retries: 429, 503, 502, 504, 409 "still in flight", timeouts and broken
connections are retried with the same Idempotency-Key, after Retry-After
when the API sends one, until --retry-deadline seconds have passed for that
batch.

Optional columns used only for creating things: `user_email`, `user_name`,
`conversation_title`.

Exit status: 0 everything loaded (or already there); 3 some lines were
rejected (see the rejected file); 1 some batches could not be delivered
before their deadline, or the API refused the key.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from api.shapes import UtteranceIn  # the API's own request shape

ROOT = Path(__file__).resolve().parents[2]
CREATE_ONLY = ("user_email", "user_name", "conversation_title")
RETRY_STATUSES = {409, 429, 502, 503, 504}
MAX_BACKOFF_S = 10.0
_encoder = msgspec.json.Encoder()


@dataclass
class Line:
    number: int  # 1-based line number in the file (CSV: counting the header)
    raw: str
    body: dict[str, Any] | None = None  # the utterance as it will be sent
    extras: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


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


class Fatal(Exception):
    """The whole load must stop (e.g. the API key is refused)."""


# ---- reading the file


def read_lines(path: Path) -> list[Line]:
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    lines = []
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            line = Line(number, raw.rstrip("\n"))
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                line.reason = f"not valid JSON: {exc}"
            else:
                if isinstance(record, dict):
                    _prepare(line, record)
                else:
                    line.reason = "each line must be one JSON object"
            lines.append(line)
    return lines


def _read_csv(path: Path) -> list[Line]:
    lines = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            number = reader.line_num
            line = Line(number, json.dumps(row, ensure_ascii=False))
            record: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v != ""}
            if None in row:
                line.reason = "more fields than the header has"
            else:
                try:
                    if "errors" in record:
                        record["errors"] = _csv_errors(record["errors"])
                    if "words_learned" in record:
                        record["words_learned"] = int(record["words_learned"])
                except ValueError as exc:
                    line.reason = str(exc)
            if line.reason is None:
                _prepare(line, record)
            lines.append(line)
    return lines


def _csv_errors(text: str) -> list[dict[str, str]]:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    points = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        category, sep, subcategory = part.partition(":")
        if not sep:
            raise ValueError(f"errors: {part!r} is not `category:subcategory`")
        points.append({"category": category.strip(), "subcategory": subcategory.strip()})
    return points


def _prepare(line: Line, record: dict[str, Any]) -> None:
    """Split off the create-only fields, give the line its utterance_id,
    and check it against the API's request shape."""
    for name in CREATE_ONLY:
        if name in record:
            line.extras[name] = str(record.pop(name))
    if not record.get("utterance_id"):
        record.pop("utterance_id", None)
        record["utterance_id"] = content_id(record)
    try:
        msgspec.convert(record, UtteranceIn, strict=True)
    except msgspec.ValidationError as exc:
        from api.edge.body import invalid

        line.reason = invalid(str(exc)).detail
        return
    line.body = record


def content_id(record: dict[str, Any]) -> str:
    """An utterance id fixed by the line's content, so a rerun, with any batch
    size, names the same utterance."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "ld-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def idempotency_key(kind: str, body: bytes) -> str:
    return f"load-{kind}-" + hashlib.sha256(body).hexdigest()[:48]


# ---- talking to the API


async def post(
    client: httpx.AsyncClient, path: str, body: bytes, key: str, deadline_s: float, outcome: Outcome
) -> httpx.Response | None:
    """POST with retries under one Idempotency-Key; None when the deadline
    passed without an answer that is not worth retrying."""
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    give_up = time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        wait = min(MAX_BACKOFF_S, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
        try:
            response = await client.post(path, content=body, headers=headers)
        except (httpx.TimeoutException, httpx.TransportError):
            response = None
        if response is not None:
            if response.status_code == 401:
                raise Fatal(f"the API refused the key: {_detail(response)}")
            if response.status_code not in RETRY_STATUSES or _is_conflict(response):
                return response
            retry_after = response.headers.get("Retry-After")
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                wait = float(retry_after) + random.uniform(0, 0.2)
        if time.monotonic() + wait > give_up:
            return None
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
    slots = asyncio.Semaphore(concurrency)

    async def create(kind: str, path: str, body: dict[str, Any]) -> None:
        raw = _encoder.encode(body)
        async with slots:
            response = await post(
                client, path, raw, idempotency_key(kind, raw), deadline_s, outcome
            )
        if response is None:
            outcome.learners[f"{kind}_failed"] += 1
        elif response.status_code == 201:
            outcome.learners[f"{kind}_ok"] += 1
        else:
            outcome.learners[f"{kind}_failed"] += 1
            outcome.rejections.append({"create": kind, "body": body, "reason": _detail(response)})

    await asyncio.gather(*(create("user", "/v1/users", u) for u in users.values()))
    await asyncio.gather(
        *(create("conversation", "/v1/conversations", c) for c in conversations.values())
    )


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
    if response is None:
        outcome.undelivered += len(batch)
        for line in batch:
            _record(
                outcome, line, None, "not delivered: no answer but retry-later before the deadline"
            )
        return
    if response.status_code >= 300:
        reason = _detail(response)
        for line in batch:
            _reject(outcome, line, response.status_code, f"the whole batch was refused: {reason}")
        return
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    outcome.replayed_batches += replayed
    for result in response.json()["results"]:
        line = batch[result["index"]]
        if result["status"] >= 400:
            _reject(outcome, line, result["status"], result.get("detail") or result.get("error"))
        elif replayed:
            outcome.replayed += 1
        elif result.get("duplicate"):
            outcome.duplicates += 1
        else:
            outcome.accepted += 1


def _reject(outcome: Outcome, line: Line, status: int | None, reason: str | None) -> None:
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


# ---- the command


async def load(args: argparse.Namespace, console: Any) -> Outcome:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    lines = read_lines(args.file)
    outcome = Outcome()
    for line in lines:
        if line.reason is not None:
            _reject(outcome, line, None, line.reason)
    headers = {"Authorization": f"Bearer {args.key}"}
    timeout = httpx.Timeout(args.timeout, connect=5.0)
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(
        base_url=args.api, headers=headers, timeout=timeout, limits=limits
    ) as client:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("learners", total=None)
            await create_learners(client, lines, args.concurrency * 4, args.retry_deadline, outcome)
            progress.update(
                task, description="utterances", total=len(lines), completed=outcome.rejected
            )
            await send_batches(
                client,
                lines,
                args.batch,
                args.concurrency,
                args.retry_deadline,
                outcome,
                lambda n: progress.advance(task, n),
            )
    return outcome


def report(
    outcome: Outcome, args: argparse.Namespace, console: Any, elapsed_s: float
) -> Path | None:
    from rich.table import Table

    table = Table(title=f"ops/load {args.file.name}")
    table.add_column("outcome")
    table.add_column("utterances", justify="right")
    table.add_row("accepted (new)", str(outcome.accepted))
    table.add_row(
        f"replayed ({outcome.replayed_batches} batches answered again)", str(outcome.replayed)
    )
    table.add_row("duplicates (already stored)", str(outcome.duplicates))
    table.add_row("rejected", str(outcome.rejected))
    table.add_row("not delivered", str(outcome.undelivered))
    console.print(table)
    learners = ", ".join(f"{k} {v}" for k, v in sorted(outcome.learners.items())) or "none"
    console.print(
        f"learners and conversations: {learners}; {outcome.batches} batches, "
        f"{outcome.retries} retries, {elapsed_s:.1f}s"
    )
    rejected_path = args.rejected or args.file.with_name(args.file.name + ".rejected.jsonl")
    if outcome.rejections:
        with rejected_path.open("w", encoding="utf-8") as f:
            for r in sorted(outcome.rejections, key=lambda r: r.get("line", 0)):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        console.print(f"rejected lines and reasons: {rejected_path}")
        return rejected_path
    rejected_path.unlink(missing_ok=True)
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ops/load", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a .jsonl (JSON Lines) or .csv file")
    parser.add_argument("--batch", type=int, default=500, help="utterances per request (1-1000)")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the API's base URL")
    parser.add_argument("--key", help="API key (default: .local/dev-api-key)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument(
        "--retry-deadline", type=float, default=300.0, help="seconds to keep retrying one batch"
    )
    parser.add_argument("--rejected", type=Path, help="where rejected lines go")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 1000:
        parser.error("--batch must be between 1 and 1000")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.key is None:
        key_file = ROOT / ".local" / "dev-api-key"
        if not key_file.exists():
            parser.error(f"no --key and no {key_file}; run ops/up or pass --key")
        args.key = key_file.read_text().strip()
    if not args.file.exists():
        parser.error(f"{args.file} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    console = Console(stderr=True)
    started = time.monotonic()
    try:
        outcome = asyncio.run(load(args, console))
    except Fatal as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    report(outcome, args, console, time.monotonic() - started)
    # One machine-readable line on stdout for scripts and tests.
    summary = {
        "accepted": outcome.accepted,
        "replayed": outcome.replayed,
        "duplicates": outcome.duplicates,
        "rejected": outcome.rejected,
        "undelivered": outcome.undelivered,
        "batches": outcome.batches,
        "replayed_batches": outcome.replayed_batches,
        "retries": outcome.retries,
        "learners": dict(outcome.learners),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    if outcome.undelivered:
        return 1
    return 3 if outcome.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
