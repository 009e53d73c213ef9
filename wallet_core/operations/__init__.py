"""Use cases of the wallet: every money-moving command, run exactly once per key.

    front.py     the front door (Operations): idempotency through memory, Redis and the
                 journal, group commit, ExecuteBatch
    engine.py    the batch engine: shared and atomic transactions, a single call as a
                 batch of one
    batch.py     the batch handed to the handlers (locked drafts, gathered rows)
    handlers.py  one handler per command: lock, apply the money rules, record
    calls.py     pure bookkeeping of calls and answers (replays, repeats, refusals)
"""

from wallet_core.operations.front import SYSTEM_CALLER, GroupCommitSettings, Operations

__all__ = ["SYSTEM_CALLER", "GroupCommitSettings", "Operations"]
