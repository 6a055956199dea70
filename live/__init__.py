"""Live updates: the events an app receives over GET /v1/live (SSE) and
GET /v1/ws, and the Redis Stream per tenant that carries them from the
processes that write (API workers, dataflows) to every API process.

`live.events` defines what a client receives; `live.bus` appends to a
tenant's stream, only ever after the write it reports is durable, and never
fails that write. The API side (fan-out, slots, tickets, endpoints) lives in
api/live/.
"""
