"""Reading the file: JSON Lines or CSV, each line checked against the API's
own request shape, each given the id and Idempotency-Key a rerun repeats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from api.shapes import UtteranceIn  # the API's own request shape

CREATE_ONLY = ("user_email", "user_name", "conversation_title")
FIELDS = tuple(f.name for f in msgspec.structs.fields(UtteranceIn))
REQUIRED = tuple(
    f.name for f in msgspec.structs.fields(UtteranceIn) if f.required
)  # conversation_id, user_id, text, timestamp
ACCEPTED = FIELDS + CREATE_ONLY
DELIMITERS = (",", ";", "\t")
_encoder = msgspec.json.Encoder()


class BadHeader(Exception):
    """The CSV header (or a --map) cannot work: said once, before anything is sent."""


def accepted_columns() -> str:
    return ", ".join(f"{n} (required)" if n in REQUIRED else n for n in ACCEPTED)


@dataclass
class Line:
    number: int  # 1-based line number in the file (CSV: counting the header)
    raw: str
    body: dict[str, Any] | None = None  # the utterance as it will be sent
    extras: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


def read_lines(path: Path, mapping: dict[str, str] | None = None) -> list[Line]:
    """Every line of the file, checked. `mapping` renames columns (CSV) or
    fields (JSON Lines): {"content": "text"}. A byte-order mark is skipped.
    BadHeader when a CSV header names an unknown column or lacks a required one."""
    mapping = mapping or {}
    if path.suffix.lower() == ".csv":
        return _read_csv(path, mapping)
    lines = []
    with path.open(encoding="utf-8-sig") as f:
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
                    _prepare(line, {mapping.get(k, k): v for k, v in record.items()})
                else:
                    line.reason = "each line must be one JSON object"
            lines.append(line)
    return lines


def _read_csv(path: Path, mapping: dict[str, str]) -> list[Line]:
    text = path.read_text(encoding="utf-8-sig")  # spreadsheets write a BOM
    delimiter = sniff_delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise BadHeader(f"{path.name}: empty file; a CSV file needs a header row")
    columns = check_header(path.name, [h.strip() for h in header], mapping)
    lines = []
    for row in reader:
        if not row:
            continue  # a blank line
        number = reader.line_num
        values = dict(zip(columns, row, strict=False))
        line = Line(number, json.dumps(values, ensure_ascii=False))
        record: dict[str, Any] = {k: v for k, v in values.items() if v != ""}
        if len(row) > len(columns) and any(v.strip() for v in row[len(columns) :]):
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


def sniff_delimiter(header_line: str) -> str:
    """`,`, `;` or tab: whichever the header row holds most of (`,` on a tie)."""
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def check_header(name: str, header: list[str], mapping: dict[str, str]) -> list[str]:
    """The field each column goes to, after `mapping`; BadHeader, naming
    every problem at once, when a column is unknown, missing or twice."""
    problems = []
    absent = [source for source in mapping if source not in header]
    if absent:
        problems.append("--map names " + _names(absent) + " but the header has no such column")
    columns = [mapping.get(h, h) for h in header]
    unknown = [
        header[i] or f"(unnamed column {i + 1})"
        for i, column in enumerate(columns)
        if column not in ACCEPTED
    ]
    if unknown:
        problems.append("unknown column " + _names(unknown))
    missing = [r for r in REQUIRED if r not in columns]
    if missing:
        problems.append("missing required column " + _names(missing))
    twice = sorted({c for c in columns if columns.count(c) > 1 and c in ACCEPTED})
    if twice:
        problems.append("more than one column for " + _names(twice))
    if problems:
        hint = ""
        if unknown or missing:
            example = f"{unknown[0]}={missing[0]}" if unknown and missing else "content=text"
            hint = f" Rename the column or map it, e.g. --map {example}."
        raise BadHeader(
            f"{name}: the header cannot be loaded: {'; '.join(problems)}. "
            f"Accepted columns: {accepted_columns()}.{hint}"
        )
    return columns


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


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
