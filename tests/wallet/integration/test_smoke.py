"""The basic round trip over real gRPC: open, deposit, bet, balance."""

from tests.helpers import Client


async def test_deposit_then_bet_moves_cash(client: Client, player: str, ledger_clean: None) -> None:
    await client.funded(player, 100_00)
    r = await client.bet(player, 30_00)
    assert (r.cash_amount, r.bonus_amount) == (30_00, 0)
    b = await client.balance(player)
    assert (b.cash, b.bonus, b.reserved, b.available) == (70_00, 0, 0, 70_00)
