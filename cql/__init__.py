"""The layer api/ and dataflows/ share and never bypass: the CQL schema and
one Struct per table, migrations, the change feed, settings, and the shared
clients (Redis rate limits, the LLM)."""
