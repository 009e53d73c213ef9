"""Storage of the wallet: all SQL (queries.py), migrations, and the ledger checker."""
