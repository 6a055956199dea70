"""utterstream's benchmarks: `ops/bench` (`python -m bench`) runs every
section once and writes one report to bench/results/.

One module per job: `limit` (raw Cassandra capacity for our statements),
`loadgen` (HTTP load: wrk with a generated Lua script, or async httpx),
`ingest` (the API's POST endpoints), `reads` (GET endpoints against a raw
driver read), `memory` (worker RSS), `profile` (the hot path), `dataflow`
(the dataflow engineer's `bench/flows.py`), `report` (JSON, Markdown,
chart). `common` holds what several of them share.

Numbers from one run are compared with each other (ratios measured side by
side on one machine), never with numbers from another machine.
"""
