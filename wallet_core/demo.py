"""A short scripted session against a running wallet, printing balances after each step.

Uses the callers file the dev launcher wrote (WALLET_CALLERS_FILE) to find tokens with the
game, bonus, payments and support scopes.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import orjson
from wallet.v1 import wallet_service_pb2 as pb
from wallet.v1 import wallet_service_pb2_grpc as pb_grpc

from wallet_core.domain.money import Currency

USD = Currency("USD", 2, 0)


def _tokens() -> dict[str, str]:
    path = os.environ.get("WALLET_CALLERS_FILE", "")
    raw = Path(path).read_bytes() if path else os.environ.get("WALLET_CALLERS", "").encode()
    if not raw:
        raise SystemExit("demo: set WALLET_CALLERS_FILE (written by `make run`)")
    tokens: dict[str, str] = {}
    for spec in orjson.loads(raw).values():
        for scope in spec["scopes"]:
            tokens.setdefault(scope, spec["token"])
    return tokens


def _show(step: str, result: pb.OperationResult | pb.Balances, extra: str = "") -> None:
    b = result if isinstance(result, pb.Balances) else result.balances
    txn = "" if isinstance(result, pb.Balances) else f"txn {result.transaction_id:>5}"
    print(f"  {step:<34} {txn:<10} cash {USD.format(b.cash):>12}  bonus "
          f"{USD.format(b.bonus):>10}  reserved {USD.format(b.reserved):>10}  {extra}")


async def run_demo(target: str) -> int:
    tokens = _tokens()
    player = f"demo-{uuid.uuid4().hex[:8]}"
    key = iter(range(1, 100))

    def md(scope: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {tokens[scope]}")]

    def k() -> str:
        return f"{player}-step-{next(key)}"

    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        w = pb_grpc.WalletServiceStub(channel)  # type: ignore[no-untyped-call]
        kw: dict[str, Any] = {"timeout": 5}
        print(f"\nDemo session for player {player} on {target} (amounts in USD):")
        r = await w.OpenWallet(pb.OpenWalletRequest(player_id=player, currency="USD",
                                                    idempotency_key=k()), metadata=md("payments"), **kw)
        _show("open wallet", r.result)
        d = await w.Deposit(pb.DepositRequest(player_id=player, currency="USD", amount=100_00,
                                              psp="stripe", psp_reference=f"pi_{player}",
                                              idempotency_key=k()), metadata=md("payments"), **kw)
        _show("deposit 100.00 via stripe", d.result)
        bet_key = k()
        bet = pb.BetRequest(player_id=player, currency="USD", amount=25_00, game_id="slots",
                            round_id="round-1", idempotency_key=bet_key)
        b = await w.Bet(bet, metadata=md("game"), **kw)
        _show("bet 25.00 (round-1)", b.result, f"split cash/bonus {b.cash_amount}/{b.bonus_amount}")
        b2 = await w.Bet(bet, metadata=md("game"), **kw)
        _show("same bet retried (same key)", b2.result, f"replay={b2.result.replay}")
        wn = await w.Win(pb.WinRequest(player_id=player, currency="USD", amount=60_00,
                                       game_id="slots", round_id="round-1", idempotency_key=k()),
                         metadata=md("game"), **kw)
        _show("win 60.00 (round-1)", wn.result)
        b3_key = k()
        b3 = await w.Bet(pb.BetRequest(player_id=player, currency="USD", amount=10_00,
                                       game_id="slots", round_id="round-2",
                                       idempotency_key=b3_key), metadata=md("game"), **kw)
        _show("bet 10.00 (round-2)", b3.result)
        rb = await w.Rollback(pb.RollbackRequest(player_id=player, currency="USD", game_id="slots",
                                                 bet_idempotency_key=b3_key, idempotency_key=k()),
                              metadata=md("game"), **kw)
        _show("rollback of that bet", rb.result, pb.RollbackOutcome.Name(rb.outcome))
        expires = datetime.now(UTC) + timedelta(days=7)
        ts = pb.GrantBonusRequest().expires_at
        ts.FromDatetime(expires)
        g = await w.GrantBonus(pb.GrantBonusRequest(
            player_id=player, currency="USD", amount=20_00, wagering_requirement=100_00,
            expires_at=ts, idempotency_key=k()), metadata=md("bonus"), **kw)
        _show("grant bonus 20.00 (wager 100.00)", g.result, f"bonus id {g.bonus_id}")
        res = await w.ReserveWithdrawal(pb.ReserveWithdrawalRequest(
            player_id=player, currency="USD", amount=50_00, psp="stripe", idempotency_key=k()),
            metadata=md("payments"), **kw)
        _show("reserve withdrawal 50.00", res.result, f"withdrawal id {res.withdrawal_id}")
        cm = await w.CommitWithdrawal(pb.CommitWithdrawalRequest(
            withdrawal_id=res.withdrawal_id, idempotency_key=k()), metadata=md("payments"), **kw)
        _show("commit withdrawal (paid out)", cm.result)
        try:
            await w.Bet(pb.BetRequest(player_id=player, currency="USD", amount=1_000_00,
                                      game_id="slots", round_id="round-3", idempotency_key=k()),
                        metadata=md("game"), **kw)
        except grpc.aio.AioRpcError as err:
            print(f"  {'bet 1,000.00':<34} refused: {err.code().name}: {err.details()}")
        bal = await w.GetBalance(pb.GetBalanceRequest(player_id=player, currency="USD"),
                                 metadata=md("support"), **kw)
        _show("final balance", bal.balances, f"available {USD.format(bal.balances.available)}")
        listing = await w.ListTransactions(pb.ListTransactionsRequest(
            player_id=player, currency="USD", page_size=3), metadata=md("support"), **kw)
        print("  latest journal entries:", ", ".join(
            f"{t.transaction_id}:{t.kind}:{t.status}" for t in listing.transactions))
        expected = 100_00 - 25_00 + 60_00 - 50_00
        ok = bal.balances.cash == expected and bal.balances.bonus == 20_00
        print(f"\n  expected cash {USD.format(expected)}, bonus 20.00 USD -> "
              f"{'CORRECT' if ok else 'WRONG'}  ({time.strftime('%H:%M:%S')})\n")
        return 0 if ok else 1
