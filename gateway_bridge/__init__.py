"""Gateway bridge: PSP webhooks and cashier REST in, exactly-once wallet gRPC calls out.

Layout: `domain/` (payment states, normalized PSP events, money at the edge, errors; no I/O),
`psp/` (one module per provider behind `psp.base.PspAdapter`, plus the outbound HTTP client),
`storage/` (all SQL and the `bridge` schema's migrations), the use cases (`payments.py`,
`inbox.py`, `status_sync.py`), the HTTP edge (`http/`), and the PSP simulator (`simulator/`).
"""
