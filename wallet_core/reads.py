"""Read-only use cases: balances, bonuses, and the journal for support and audit."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import orjson

from wallet_core.db import DB_DOWN, database_unavailable
from wallet_core.domain import errors
from wallet_core.domain.errors import InvalidField, NotFound
from wallet_core.domain.ledger import Balances, BonusState
from wallet_core.domain.limits import Guard
from wallet_core.domain.outcome import TransactionView
from wallet_core.storage import repo

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 500
_FIRST_PAGE = 2**63 - 1


class Reads:
    def __init__(self, pool: asyncpg.Pool, *, pool_acquire_timeout_ms: int) -> None:
        self._pool = pool
        self._acquire_timeout_s = pool_acquire_timeout_ms / 1000

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; Postgres being away is UNAVAILABLE for the caller, not a bug."""
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
                yield conn
        except DB_DOWN as exc:
            raise database_unavailable() from exc

    async def balance(self, player_id: str, currency: str) -> Balances:
        async with self._connection() as conn:
            found = await repo.balance(conn, player_id, currency)
        if found is None:
            raise NotFound(f"player_id has no {currency} wallet", reason=errors.WALLET_NOT_FOUND)
        return found[1]

    async def limits(self, player_id: str, currency: str, now: datetime) -> Guard:
        """The wallet's responsible-gambling limits as of `now` (none set: an empty guard)."""
        async with self._connection() as conn:
            exists, guard = await repo.limits(conn, player_id, currency)
        if not exists:
            raise NotFound(f"player_id has no {currency} wallet", reason=errors.WALLET_NOT_FOUND)
        return (guard or Guard()).at(now)

    async def bonuses(self, player_id: str, currency: str,
                      include_inactive: bool) -> list[BonusState]:
        async with self._connection() as conn:
            if await repo.balance(conn, player_id, currency) is None:
                raise NotFound(f"player_id has no {currency} wallet",
                               reason=errors.WALLET_NOT_FOUND)
            return await repo.list_bonuses(conn, player_id, currency, include_inactive)

    async def transaction(self, *, transaction_id: int | None = None,
                          caller: str | None = None, key: str | None = None) -> TransactionView:
        async with self._connection() as conn:
            if transaction_id is None:
                assert caller is not None and key is not None
                transaction_id = await repo.transaction_id_by_key(conn, caller, key)
            view = (await repo.transaction_by_id(conn, transaction_id)
                    if transaction_id is not None else None)
        if view is None:
            raise NotFound("no such transaction", reason=errors.TRANSACTION_NOT_FOUND)
        return view

    async def transactions(self, player_id: str, currency: str, page_size: int,
                           page_token: str) -> tuple[list[TransactionView], str]:
        if page_size < 0 or page_size > PAGE_SIZE_MAX:
            raise InvalidField("page_size", f"must be between 1 and {PAGE_SIZE_MAX} (0 means "
                                            f"{PAGE_SIZE_DEFAULT})")
        limit = page_size or PAGE_SIZE_DEFAULT
        async with self._connection() as conn:
            wallet = await repo.balance(conn, player_id, currency)
            if wallet is None:
                raise NotFound(f"player_id has no {currency} wallet",
                               reason=errors.WALLET_NOT_FOUND)
            wallet_id = wallet[0]
            before = _decode_token(page_token, wallet_id) if page_token else _FIRST_PAGE
            found = await repo.list_transactions(conn, wallet_id, before, limit + 1)
        views = found[:limit]
        more = len(found) > limit
        return views, _encode_token(wallet_id, views[-1].transaction_id) if more else ""


# Page tokens are opaque to callers; they name the wallet so a token can't page another one.
def _encode_token(wallet_id: int, last_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([wallet_id, last_id])).decode()


def _decode_token(token: str, wallet_id: int) -> int:
    try:
        token_wallet, last_id = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidField("page_token", "is not a token returned by ListTransactions") from None
    if token_wallet != wallet_id or not isinstance(last_id, int):
        raise InvalidField("page_token", "belongs to another wallet's listing")
    return last_id
