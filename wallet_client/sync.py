"""A blocking client for code without an event loop: the async client on a private loop in
one daemon thread, so both share the retry rules, errors and results exactly.

    with WalletClient("wallet.internal:50051", token=TOKEN) as wallet:
        wallet.bet("p-1", "EUR", 100, game_id="slots", round_id="r-1", key=keys.bet())

Safe to call from several threads at once; calls run concurrently on the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from wallet_client.aio import AsyncWalletClient

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(method: Callable[Concatenate[AsyncWalletClient, P], Awaitable[R]],
              ) -> Callable[Concatenate[WalletClient, P], R]:
    def call(self: WalletClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(method(self._async, *args, **kwargs))  # type: ignore[arg-type]
    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class WalletClient:
    """Takes the same arguments as AsyncWalletClient."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        # First, so bad arguments raise before a loop thread is started (and left running).
        self._async = AsyncWalletClient(target, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="wallet-client", daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> WalletClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    call = _blocking(AsyncWalletClient.call)
    open_wallet = _blocking(AsyncWalletClient.open_wallet)
    get_balance = _blocking(AsyncWalletClient.get_balance)
    bet = _blocking(AsyncWalletClient.bet)
    win = _blocking(AsyncWalletClient.win)
    rollback = _blocking(AsyncWalletClient.rollback)
    deposit = _blocking(AsyncWalletClient.deposit)
    reserve_withdrawal = _blocking(AsyncWalletClient.reserve_withdrawal)
    commit_withdrawal = _blocking(AsyncWalletClient.commit_withdrawal)
    cancel_withdrawal = _blocking(AsyncWalletClient.cancel_withdrawal)
    reverse_withdrawal = _blocking(AsyncWalletClient.reverse_withdrawal)
    chargeback = _blocking(AsyncWalletClient.chargeback)
    grant_bonus = _blocking(AsyncWalletClient.grant_bonus)
    forfeit_bonus = _blocking(AsyncWalletClient.forfeit_bonus)
    get_bonuses = _blocking(AsyncWalletClient.get_bonuses)
    adjust = _blocking(AsyncWalletClient.adjust)
    get_transaction = _blocking(AsyncWalletClient.get_transaction)
    list_transactions = _blocking(AsyncWalletClient.list_transactions)
    set_limits = _blocking(AsyncWalletClient.set_limits)
    get_limits = _blocking(AsyncWalletClient.get_limits)
    exclude = _blocking(AsyncWalletClient.exclude)
    restrict = _blocking(AsyncWalletClient.restrict)
    execute_batch = _blocking(AsyncWalletClient.execute_batch)
