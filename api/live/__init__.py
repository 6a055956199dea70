"""The API side of live updates (live/ is the event bus they ride on):

- `slots`: a tenant's connection slots, leases in Redis that every live
  connection renews, so a dead process's slots free themselves;
- `tickets`: single-use tickets for browsers, whose EventSource cannot send
  an Authorization header;
- `hub`: one reader per tenant stream and process, fanning entries out to
  the process's connections, each through a bounded queue;
- `feed`: one connection's events: resume from `Last-Event-ID`, reset,
  filters, heartbeats;
- `session`: a connection's life: its slot, replacement by a newer
  connection with the same client_id, the reason it closed;
- `budget`: WebSocket messages being processed at once, across processes;
- `ws`: the WebSocket protocol.
"""
