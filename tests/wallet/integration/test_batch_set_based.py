"""Set-based batches: bets and wins gather their rows in memory and one statement writes them
before the commit, with other operations written at once in between. These tests prove a
batch ends exactly where the same calls made one by one (group commit off) end, and that a
key committed elsewhere while the batch waited for its locks is answered by that commit."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, error_info, future, key
from wallet_core import config
from wallet_core.server import running

ALL_SCOPES_TOKEN = "test-all-scopes-token-0123456789"
ROUNDS = ("r1", "r2", "r3")
# Fields that differ between two runs of the same script by design.
_RUN_SPECIFIC = {"transaction_id", "created_at", "bonus_id", "replay"}


@pytest.fixture
def all_scopes(custom_settings: Callable[..., config.Settings]) -> Callable[..., config.Settings]:
    """Settings with one more caller holding every money scope, so one script can run both
    one call at a time and as one ExecuteBatch under the same caller."""
    def make(**changes: object) -> config.Settings:
        base = custom_settings(listen_addr="127.0.0.1:0", **changes)
        callers = dict(base.callers_by_token_sha256)
        callers[hashlib.sha256(ALL_SCOPES_TOKEN.encode()).digest()] = config.Caller(
            "house-tools", frozenset({"game", "bonus", "payments", "support"}))
        return custom_settings(listen_addr="127.0.0.1:0", callers_by_token_sha256=callers,
                               **changes)
    return make


def script(seed: int, length: int) -> list[tuple[str, dict[str, Any]]]:
    """A random game/bonus/payments session as (method, fields) with `{p}` standing for the
    player's key prefix: bets and wins on a few rounds, rollbacks of earlier bets and of bets
    not yet seen (later sent: refused), deposits, bonus grants, signed adjustments."""
    rng = random.Random(seed)
    ops: list[tuple[str, dict[str, Any]]] = []
    bets: list[str] = []
    tombstoned: list[str] = []
    for n in range(length):
        r = rng.random()
        idem = f"{{p}}-{n}"
        if r < 0.35:
            bet_key = tombstoned.pop() if tombstoned and rng.random() < 0.5 else idem
            bets.append(bet_key)
            ops.append(("Bet", {"amount": rng.choice([50, 100, 300, 700, 2_000]),
                                "game_id": "slots", "round_id": rng.choice(ROUNDS),
                                "idempotency_key": bet_key}))
        elif r < 0.55:
            ops.append(("Win", {"amount": rng.choice([1, 100, 250, 999]), "game_id": "slots",
                                "round_id": rng.choice(ROUNDS), "idempotency_key": idem}))
        elif r < 0.68:
            target = rng.choice(bets) if bets and rng.random() < 0.7 else f"{{p}}-ghost-{n}"
            if target.startswith("{p}-ghost"):
                tombstoned.append(target)
            ops.append(("Rollback", {"game_id": "slots", "bet_idempotency_key": target,
                                     "idempotency_key": idem}))
        elif r < 0.74:
            ops.append(("Deposit", {"amount": rng.choice([100, 1_000]), "psp": "stripe",
                                    "psp_reference": f"pi_{{p}}-{n}", "idempotency_key": idem}))
        elif r < 0.9:
            ops.append(("GrantBonus", {"amount": rng.choice([200, 500, 1_000]),
                                       "wagering_requirement": rng.choice([0, 400, 1_500]),
                                       "idempotency_key": idem}))
        else:
            ops.append(("Adjust", {"bucket": pb.BUCKET_CASH, "reason": "goodwill",
                                   "amount": rng.choice([-300, -50, 75, 400]),
                                   "idempotency_key": idem}))
    return ops


# Wins split as their round was staked: bets that reach the bonus, then wins on that round in
# the same batch, which must see the stakes the batch itself added.
BONUS_STAKED_ROUND: list[tuple[str, dict[str, Any]]] = [
    ("GrantBonus", {"amount": 1_000, "wagering_requirement": 5_000, "idempotency_key": "{p}-g"}),
    ("Bet", {"amount": 400, "game_id": "slots", "round_id": "r1", "idempotency_key": "{p}-b1"}),
    ("Win", {"amount": 200, "game_id": "slots", "round_id": "r1", "idempotency_key": "{p}-w1"}),
    ("Bet", {"amount": 100, "game_id": "slots", "round_id": "r1", "idempotency_key": "{p}-b2"}),
    ("Win", {"amount": 101, "game_id": "slots", "round_id": "r1", "idempotency_key": "{p}-w2"}),
    ("Rollback", {"game_id": "slots", "bet_idempotency_key": "{p}-b2",
                  "idempotency_key": "{p}-rb"}),
    ("Bet", {"amount": 700, "game_id": "slots", "round_id": "r1", "idempotency_key": "{p}-b3"}),
    ("Win", {"amount": 333, "game_id": "slots", "round_id": "r1", "idempotency_key": "{p}-w3"}),
]
SCRIPTS = {"bonus-staked-round": BONUS_STAKED_ROUND,
           **{f"random-{seed}": script(seed, 60) for seed in range(6)}}

_FIELD = {"Bet": "bet", "Win": "win", "Rollback": "rollback", "Deposit": "deposit",
          "GrantBonus": "grant_bonus", "Adjust": "adjust"}


def request(method: str, fields: dict[str, Any], player: str) -> Any:
    values = {k: v.replace("{p}", player) if isinstance(v, str) else v
              for k, v in fields.items()}
    values.update(player_id=player, currency="USD")
    if method == "GrantBonus":
        values["expires_at"] = future(7)
    return getattr(pb, f"{method}Request")(**values)


def _plain(message: Any) -> Any:
    data = MessageToDict(message, preserving_proto_field_name=True)

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _RUN_SPECIFIC}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(data)


async def _one_by_one(client: Client, ops: list[tuple[str, dict[str, Any]]],
                      player: str) -> list[Any]:
    answers: list[Any] = []
    for method, fields in ops:
        try:
            reply = await getattr(client.stub, method)(
                request(method, fields, player), timeout=10,
                metadata=[("authorization", f"Bearer {ALL_SCOPES_TOKEN}")])
            answers.append(_plain(reply))
        except grpc.aio.AioRpcError as err:
            answers.append((err.code().name, error_info(err).reason))
    return answers


async def _as_batch(client: Client, ops: list[tuple[str, dict[str, Any]]], player: str,
                    ) -> list[Any]:
    reply = await client.stub.ExecuteBatch(pb.ExecuteBatchRequest(operations=[
        pb.BatchOperation(**{_FIELD[m]: request(m, f, player)}) for m, f in ops]),
        metadata=[("authorization", f"Bearer {ALL_SCOPES_TOKEN}")], timeout=30)
    answers: list[Any] = []
    for r in reply.results:
        if r.WhichOneof("outcome") == "error":
            answers.append((r.error.code, r.error.reason))
        else:
            answers.append(_plain(getattr(r, r.WhichOneof("outcome"))))
    return answers


@pytest.mark.parametrize("name", list(SCRIPTS))
async def test_a_batch_ends_where_the_same_calls_one_by_one_end(
        name: str, all_scopes: Callable[..., config.Settings], ledger_clean: None) -> None:
    """The same script, on two fresh players: one call at a time with group commit off
    (every operation written at once), and as one ExecuteBatch (bets and wins set-based, the
    rest in between). Every answer and the final balances are the same."""
    ops = SCRIPTS[name]
    alone, batched = f"alone-{key('p')}", f"batched-{key('p')}"
    async with running(all_scopes(group_commit=False)) as run_off, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run_off.port}") as ch_off, \
            running(all_scopes()) as run_on, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run_on.port}") as ch_on:
        one, many = Client(ch_off), Client(ch_on)
        for client, player in ((one, alone), (many, batched)):
            await client.funded(player, 3_00)  # little cash: bets reach the bonus
        expected = await _one_by_one(one, ops, alone)
        got = await _as_batch(many, ops, batched)
        assert [m for m, _ in ops].count("Bet") >= 3, "the script exercises the hot path"
        for i, (want, have) in enumerate(zip(expected, got, strict=True)):
            assert have == want, f"operation {i} ({ops[i][0]}) answered differently"
        assert _plain(await one.balance(alone)) == _plain(await many.balance(batched))


async def test_a_key_committed_while_the_batch_waited_is_answered_by_that_commit(
        client: Client, db: asyncpg.Connection, database_url: str, player: str,
        ledger_clean: None) -> None:
    """The batch looks its keys up, then waits for a wallet lock; meanwhile another call
    commits one of its keys (a different request). The batch's write finds the key taken,
    rolls back, and answers that operation as the key's owner does (reused key) while its
    neighbour is applied once."""
    held, other, third = player, f"{player}-b", f"{player}-c"
    for p in (held, other, third):
        await client.funded(p, 10_00)
    taken = key("taken")
    locker = await asyncpg.connect(database_url)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("SELECT 1 FROM wallet.wallets WHERE player_id = $1 FOR UPDATE",
                             held)
        ops = [pb.BatchOperation(bet=pb.BetRequest(
                   player_id=p, currency="USD", amount=1_00, game_id="slots", round_id="r",
                   idempotency_key=k)) for p, k in ((held, taken), (other, key("free")))]
        pending = asyncio.create_task(client.call(
            "ExecuteBatch", pb.ExecuteBatchRequest(operations=ops), "game", deadline_s=30))
        for _ in range(200):  # until the batch waits for the lock
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%FOR UPDATE OF w%'")
            if waiting:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the batch never waited for the held wallet lock")
        await client.bet(third, 2_00, idem=taken)  # commits the key on another wallet
        await tx.commit()
    finally:
        await locker.close()
    results = (await pending).results
    assert results[0].WhichOneof("outcome") == "error"
    assert results[0].error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert results[1].WhichOneof("outcome") == "bet"
    assert (await client.balance(held)).cash == 10_00
    assert (await client.balance(other)).cash == 9_00
    assert (await client.balance(third)).cash == 8_00


def _bet_op(player: str, amount: int, idem: str, currency: str = "USD") -> pb.BatchOperation:
    return pb.BatchOperation(bet=pb.BetRequest(
        player_id=player, currency=currency, amount=amount, game_id="slots", round_id="r",
        idempotency_key=idem))


def _rollback_op(player: str, bet_key: str) -> pb.BatchOperation:
    return pb.BatchOperation(rollback=pb.RollbackRequest(
        player_id=player, currency="USD", game_id="slots", bet_idempotency_key=bet_key,
        idempotency_key=key("rb")))


async def test_journal_ids_follow_the_order_operations_were_applied(
        all_scopes: Callable[..., config.Settings], db: asyncpg.Connection, player: str,
        ledger_clean: None) -> None:
    """[bet 1.50, deposit 5.00, bet 4.00] on 2.00 in one batch (bets set-based, the deposit
    written at once): transaction ids rise in that order, so the wallet's history read by id
    shows cash 0.50, 5.50, 1.50, each balance following from the one before."""
    async with running(all_scopes()) as run, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
        client = Client(channel)
        await client.funded(player, 2_00)
        reply = await client.stub.ExecuteBatch(pb.ExecuteBatchRequest(operations=[
            _bet_op(player, 1_50, key("b1")),
            pb.BatchOperation(deposit=pb.DepositRequest(
                player_id=player, currency="USD", amount=5_00, psp="stripe",
                psp_reference=key("pi"), idempotency_key=key("d"))),
            _bet_op(player, 4_00, key("b2"))]),
            metadata=[("authorization", f"Bearer {ALL_SCOPES_TOKEN}")], timeout=10)
    ids = [int(getattr(r, r.WhichOneof("outcome")).result.transaction_id)
           for r in reply.results]
    assert ids == sorted(ids) and len(set(ids)) == 3, reply
    rows = await db.fetch(
        "SELECT (j.outcome->'balances'->>0)::bigint AS cash FROM wallet.journal j "
        "JOIN wallet.wallets w ON w.id = j.wallet_id WHERE w.player_id = $1 AND j.id >= $2 "
        "ORDER BY j.id", player, ids[0])
    assert [r["cash"] for r in rows] == [50, 5_50, 1_50]


async def test_a_rollback_tombstone_refuses_the_bet_for_its_player_only(
        client: Client, player: str, ledger_clean: None) -> None:
    """Rollbacks of one unknown key by two players: both 'bet not found' (no INTERNAL). A
    tombstone refuses the bet of the player whose rollback wrote it, alone or in a batch,
    and not a third player's bet under that key."""
    other, third = f"{player}-b", f"{player}-c"
    for p in (player, other, third):
        await client.funded(p, 10_00)
    shared, mine, alone = key("ghost"), key("ghost"), key("ghost")
    for p in (player, other):
        answer = await client.rollback(p, shared)
        assert answer.outcome == pb.ROLLBACK_OUTCOME_BET_NOT_FOUND
    reply = await client.call("ExecuteBatch", pb.ExecuteBatchRequest(
        operations=[_bet_op(third, 1_00, shared)]), "game")
    assert reply.results[0].WhichOneof("outcome") == "bet", "no tombstone of its own"
    for bet_key in (mine, alone):
        await client.rollback(player, bet_key)
    reply = await client.call("ExecuteBatch", pb.ExecuteBatchRequest(
        operations=[_bet_op(player, 1_00, mine)]), "game")
    assert reply.results[0].error.reason == "ALREADY_ROLLED_BACK"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.bet(player, 1_00, idem=alone)
    assert error_info(refused.value).reason == "ALREADY_ROLLED_BACK"
    assert [(await client.balance(p)).cash for p in (player, other, third)] == [
        10_00, 10_00, 9_00]


async def test_a_repeated_key_after_an_unrecorded_failure_runs_on_its_own(
        client: Client, player: str, ledger_clean: None) -> None:
    """[bet on a GBP wallet that does not exist (key K), bet on the funded USD wallet (key
    K)]: the first is WALLET_NOT_FOUND and records nothing, so K is free and the second, a
    different request, is applied rather than handed the first one's error."""
    await client.funded(player, 5_00)
    idem = key("k")
    reply = await client.call("ExecuteBatch", pb.ExecuteBatchRequest(operations=[
        _bet_op(player, 1_00, idem, currency="GBP"), _bet_op(player, 1_00, idem)]), "game")
    assert reply.results[0].error.reason == "WALLET_NOT_FOUND"
    assert reply.results[1].WhichOneof("outcome") == "bet"
    assert (await client.balance(player)).cash == 4_00
