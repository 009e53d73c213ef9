"""Gateway bridge: PSP webhooks and cashier REST in, exactly-once wallet gRPC calls out.

A folder per capability (docs/ARCHITECTURE.md draws them and what each may import):
`payments/` (the payment, the cashier, the inbox, the status sync, risk review), `fx/`
(rates and credit pinning), `risk/`, `incidents/`, `reconciliation/`, `support/`
(walletctl), `psp/` (one adapter per provider), `wallet/` (the wallet's gRPC client),
`shared/` (the vocabulary they all speak: money, errors, PSP events), and `http/`, the edge.
The wiring sits at the top (server.py, cli.py, config.py); the migrations in `migrations/`.
"""
