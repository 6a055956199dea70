"""ops/load against a real API process: a file loads once, however often it
is run and with whatever batch size; a malformed line is rejected with its
reason while the rest load; 429s are waited out with the same key."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from loader.lines import content_id
from tests.conftest import ApiProcess, new_tenant
from tests.helpers import feed_entries


def sample_lines(tenant: str, count: int) -> list[dict]:
    """`count` utterances of two learners; every third one without an id."""
    start = datetime.now(UTC) - timedelta(hours=2)
    lines = []
    for i in range(count):
        learner = f"{tenant}-learner-{i % 2}"
        line = {
            "utterance_id": f"{tenant}-utt-{i}",
            "user_id": learner,
            "conversation_id": f"{learner}-conv",
            "text": f"Yesterday I goed to the market, visit number {i}.",
            "timestamp": (start + timedelta(seconds=30 * i)).isoformat(),
            "errors": [{"category": "grammar", "subcategory": "past tense"}],
            "words_learned": i % 4,
            "user_name": f"Learner {i % 2}",
        }
        if i % 3 == 0:
            del line["utterance_id"]
        lines.append(line)
    return lines


def write_jsonl(path: Path, lines: list[dict], bad_at: int | None = None) -> None:
    rows = [json.dumps(line) for line in lines]
    if bad_at is not None:
        bad = dict(lines[0], words_learned=-2, utterance_id="bad-line")
        rows.insert(bad_at, json.dumps(bad))
    path.write_text("\n".join(rows) + "\n")


def run_loader(path: Path, api: ApiProcess, key: str, *args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "loader", str(path), "--api", api.url, "--key", key, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def api(migrated):
    process = ApiProcess(migrated)
    yield process
    process.stop()


def read_back(api: ApiProcess, tenant, lines: list[dict]) -> list[dict]:
    """Each line's stored utterance, by its id (explicit or derived), in order."""
    stored = []
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=10) as client:
        for line in lines:
            body = {k: v for k, v in line.items() if k != "user_name"}
            uid = body.get("utterance_id") or content_id(body)
            r = client.get(f"/v1/utterances/{uid}")
            assert r.status_code == 200, (uid, r.text)
            stored.append(r.json())
    return stored


def test_a_file_loads_once_whatever_the_batch_size(tmp_path, api, db, tenant, settings):
    since = datetime.now(UTC) - timedelta(seconds=5)
    lines = sample_lines(tenant.name, 25)
    path = tmp_path / "utterances.jsonl"
    write_jsonl(path, lines, bad_at=10)

    rc, first = run_loader(path, api, tenant.key, "--batch", "7", "--concurrency", "3")
    assert (rc, first["accepted"], first["rejected"], first["undelivered"]) == (3, 25, 1, 0)
    assert first["learners"] == {"user_ok": 2, "conversation_ok": 2}

    rejected = [
        json.loads(r)
        for r in (tmp_path / "utterances.jsonl.rejected.jsonl").read_text().splitlines()
    ]
    assert len(rejected) == 1
    assert rejected[0]["line"] == 11
    assert "words_learned" in rejected[0]["reason"]

    # Same batch size: every batch is answered again from its Idempotency-Key.
    rc, again = run_loader(path, api, tenant.key, "--batch", "7", "--concurrency", "3")
    assert (again["accepted"], again["replayed"], again["rejected"]) == (0, 25, 1)
    assert again["replayed_batches"] == again["batches"] == 4

    # Another batch size: new keys, but every utterance id is already stored.
    rc, other = run_loader(path, api, tenant.key, "--batch", "10")
    assert (other["accepted"], other["duplicates"], other["replayed"]) == (0, 25, 0)

    # Read back: every utterance exactly once, by its id (explicit or derived).
    stored = read_back(api, tenant, lines)
    assert [u["text"] for u in stored] == [line["text"] for line in lines]
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=10) as client:
        assert client.get("/v1/utterances/bad-line").status_code == 404
    entries = feed_entries(db, settings.feed, tenant.name, since)
    assert len(entries) == 25
    assert len({e.utterance_id for e in entries}) == 25


def test_csv_and_rate_limits(tmp_path, api, db):
    """A CSV file through a key limited to 20 requests/s (burst 10): the
    loader waits out the 429s and still loads everything once."""
    slow = new_tenant(db, rate=20, burst=10)
    lines = sample_lines(slow.name, 30)
    path = tmp_path / "utterances.csv"
    columns = [
        "utterance_id",
        "user_id",
        "conversation_id",
        "text",
        "timestamp",
        "errors",
        "words_learned",
    ]
    rows = [",".join(columns)]
    for line in lines:
        errors = ";".join(f"{e['category']}:{e['subcategory']}" for e in line["errors"])
        values = [line.get("utterance_id", ""), line["user_id"], line["conversation_id"],
                  f'"{line["text"]}"', line["timestamp"], errors, str(line["words_learned"])]  # fmt: skip
        rows.append(",".join(values))
    path.write_text("\n".join(rows) + "\n")

    rc, first = run_loader(path, api, slow.key, "--batch", "10", "--concurrency", "2")
    assert (rc, first["accepted"], first["rejected"]) == (0, 30, 0)
    assert first["retries"] > 0  # 30 items at 20/s with a burst of 10 cannot go through at once
    assert not (tmp_path / "utterances.csv.rejected.jsonl").exists()
    rc, again = run_loader(path, api, slow.key, "--batch", "10", "--concurrency", "2")
    assert (rc, again["accepted"], again["replayed"]) == (0, 0, 30)


def write_csv(path: Path, lines: list[dict], columns: list[str], delimiter: str, bom: bool) -> None:
    """A spreadsheet-style export: `columns` name the fields in order
    (`content` holds the text), cells quoted, optionally with a BOM."""
    field = {"content": "text"}
    rows = [delimiter.join(columns)]
    for line in lines:
        values = []
        for column in columns:
            value = line.get(field.get(column, column), "")
            if column == "errors":
                value = ";".join(f"{e['category']}:{e['subcategory']}" for e in value)
            values.append('"' + str(value).replace('"', '""') + '"')
        rows.append(delimiter.join(values))
    path.write_text(("\ufeff" if bom else "") + "\r\n".join(rows) + "\r\n", encoding="utf-8")


COLUMNS = ["utterance_id", "user_id", "conversation_id", "text", "timestamp", "errors",
           "words_learned", "user_name"]  # fmt: skip


def test_spreadsheet_csv_with_bom_separators_and_mapped_columns(tmp_path, api, tenant):
    """A BOM and `;` separators load as they are; tab separators with a
    `content` column load with --map content=text."""
    lines = sample_lines(tenant.name, 12)
    semicolons = tmp_path / "export.csv"
    write_csv(semicolons, lines[:6], COLUMNS, ";", bom=True)
    rc, first = run_loader(semicolons, api, tenant.key)
    assert (rc, first["accepted"], first["rejected"], first["undelivered"]) == (0, 6, 0, 0)

    tabs = tmp_path / "content.csv"
    columns = [("content" if c == "text" else c) for c in COLUMNS]
    write_csv(tabs, lines[6:], columns, "\t", bom=True)
    rc, second = run_loader(tabs, api, tenant.key, "--map", "content=text")
    assert (rc, second["accepted"], second["rejected"], second["undelivered"]) == (0, 6, 0, 0)

    stored = read_back(api, tenant, lines)
    assert [(u["text"], u["errors"]) for u in stored] == [
        (line["text"], line["errors"]) for line in lines
    ]


def test_an_unknown_column_fails_once_up_front(tmp_path, api, tenant):
    lines = sample_lines(tenant.name, 5)
    path = tmp_path / "content.csv"
    write_csv(path, lines, [("content" if c == "text" else c) for c in COLUMNS], ";", bom=True)
    done = subprocess.run(
        [sys.executable, "-m", "loader", str(path), "--api", api.url, "--key", tenant.key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    errors = [row for row in done.stderr.splitlines() if row.strip()]
    assert len(errors) == 1, done.stderr  # one message, not one per line
    assert "unknown column `content`" in errors[0]
    assert "missing required column `text`" in errors[0]
    assert "Accepted columns: conversation_id (required)" in errors[0]
    assert "--map content=text" in errors[0]
    assert not (tmp_path / "content.csv.rejected.jsonl").exists()
    with httpx.Client(base_url=api.url, headers=tenant.headers, timeout=10) as client:
        assert client.get(f"/v1/utterances/{lines[1]['utterance_id']}").status_code == 404


def test_undelivered_lines_say_why(tmp_path, api, db):
    """A batch the key's rate limit never lets through within the retry
    deadline is not delivered, and the report says the last answer."""
    slow = new_tenant(db, rate=0.01, burst=5)
    lines = sample_lines(slow.name, 10)
    path = tmp_path / "utterances.jsonl"
    write_jsonl(path, lines)
    rc, outcome = run_loader(path, api, slow.key, "--batch", "10", "--retry-deadline", "2")
    assert (rc, outcome["accepted"], outcome["undelivered"]) == (1, 0, 10)
    [batch] = outcome["not_delivered"]
    assert (batch["first_line"], batch["last_line"], batch["lines"]) == (1, 10, 10)
    assert "last answer: HTTP 429" in batch["reason"], batch
    rejected = [
        json.loads(r)
        for r in (tmp_path / "utterances.jsonl.rejected.jsonl").read_text().splitlines()
    ]
    assert len(rejected) == 10
    assert all(r["reason"] == f"not delivered: {batch['reason']}" for r in rejected)
