"""Reading the file: JSON Lines or CSV, each line checked against the API's
own request shape, each given the id and Idempotency-Key a rerun repeats."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from api.shapes import UtteranceIn  # the API's own request shape

CREATE_ONLY = ("user_email", "user_name", "conversation_title")
_encoder = msgspec.json.Encoder()


@dataclass
class Line:
    number: int  # 1-based line number in the file (CSV: counting the header)
    raw: str
    body: dict[str, Any] | None = None  # the utterance as it will be sent
    extras: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


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
