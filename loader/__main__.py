"""`python -m loader FILE ...`: the command (see loader/__init__.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from loader.lines import ACCEPTED, BadHeader, accepted_columns, read_lines
from loader.sender import Fatal, Outcome, create_learners, reject, send_batches

ROOT = Path(__file__).resolve().parents[1]


async def load(args: argparse.Namespace, console: Any) -> Outcome:
    lines = read_lines(args.file, args.map)
    outcome = Outcome()
    for line in lines:
        if line.reason is not None:
            reject(outcome, line, None, line.reason)
    async with _client(args) as client:
        with _progress(console) as progress:
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


def _client(args: argparse.Namespace) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {args.key}"}
    timeout = httpx.Timeout(args.timeout, connect=5.0)
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    return httpx.AsyncClient(base_url=args.api, headers=headers, timeout=timeout, limits=limits)


def _progress(console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


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
    for batch in sorted(outcome.not_delivered, key=lambda b: b["first_line"]):
        console.print(
            f"[red]not delivered:[/red] lines {batch['first_line']}-{batch['last_line']} "
            f"({batch['lines']} utterances): {batch['reason']}"
        )
    rejected_path = args.rejected or args.file.with_name(args.file.name + ".rejected.jsonl")
    if outcome.rejections:
        with rejected_path.open("w", encoding="utf-8") as f:
            for r in sorted(outcome.rejections, key=lambda r: r.get("line", 0)):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        console.print(f"rejected and undelivered lines, with reasons: {rejected_path}")
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
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="read COLUMN as FIELD, e.g. --map content=text (repeatable, or comma-separated)",
    )
    args = parser.parse_args(argv)
    args.map = _mapping(parser, args.map)
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


def _mapping(parser: argparse.ArgumentParser, given: list[str]) -> dict[str, str]:
    """--map COLUMN=FIELD options (repeated or comma-separated) as a dict."""
    mapping: dict[str, str] = {}
    for pair in (p.strip() for item in given for p in item.split(",")):
        column, sep, target = (part.strip() for part in pair.partition("="))
        if not sep or not column or not target:
            parser.error(f"--map {pair!r}: write COLUMN=FIELD, e.g. --map content=text")
        if target not in ACCEPTED:
            parser.error(f"--map {pair}: `{target}` is not a field; accepted: {accepted_columns()}")
        mapping[column] = target
    return mapping


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    console = Console(stderr=True)
    started = time.monotonic()
    try:
        outcome = asyncio.run(load(args, console))
    except BadHeader as exc:
        console.print(f"[red]error:[/red] {exc} Nothing was sent.", highlight=False, soft_wrap=True)
        return 2
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
        "not_delivered": sorted(outcome.not_delivered, key=lambda b: b["first_line"]),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    if outcome.undelivered:
        return 1
    return 3 if outcome.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
