"""The bulk loader: `ops/load FILE` (`python -m loader FILE [--batch 500]
[--concurrency 4] [--api URL] [--key KEY]`). A client of the API: the file
is read and checked (loader.lines), then sent (loader.sender).

Imports utterances from JSON Lines (one object per line) or CSV (a header
row; `errors` as a JSON array or `category:subcategory;category:subcategory`)
through POST /v1/utterances/batch, after creating the learners and
conversations the file names.

CSV as spreadsheets export it: a byte-order mark is skipped, and the
separator is `,`, `;` or tab, whichever the header row holds most of. The
header is checked once, before anything is sent: an unknown column, a
missing required one or a column named twice stops the load with one message
listing the accepted columns (exit 2). `--map content=text` (repeatable, or
comma-separated) reads a column, or a JSON Lines field, under another name.

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
batch. A batch still without an answer then is "not delivered": the report
lists each such batch's lines with its last status and detail (or the
connection error), and so do the summary's `not_delivered` and the rejected
file.

Optional columns used only for creating things: `user_email`, `user_name`,
`conversation_title`.

Exit status: 0 everything loaded (or already there); 3 some lines were
rejected (see the rejected file); 1 some batches could not be delivered
before their deadline, or the API refused the key; 2 bad arguments or a CSV
header that cannot be loaded (nothing sent).
"""
