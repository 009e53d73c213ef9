"""Storage functions: run the statements in queries.py and return domain objects.

Every function takes a connection that the caller holds inside a transaction (writes) or
not (reads); none opens its own. Postgres constraint names are translated here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from wallet_core.domain.ledger import Balances, BonusState, Draft, Posting
from wallet_core.domain.limits import Guard
from wallet_core.domain.money import Currency
from wallet_core.domain.outcome import Outcome, TransactionView, outcome_record
from wallet_core.storage import queries as q

# Constraint names that mean "somebody else got there first" (see the migrations).
KEY_TAKEN = "journal_caller_key"
PSP_REFERENCE_TAKEN = "journal_psp_reference_key"


class Taken(Exception):
    """A unique constraint refused a row another transaction committed first; the
    transaction is rolled back. `constraint` names it (see the migrations)."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(f"unique constraint {constraint} refused the row")
        self.constraint = constraint


class KeyTaken(Taken):
    """The idempotency key was committed meanwhile: a retry replays it."""


class PspReferenceTaken(Taken):
    """The PSP reference was credited meanwhile under another idempotency key."""


class WriteConflict(Exception):
    """Postgres chose this transaction as a deadlock victim or refused it as a serialization
    failure: it was rolled back and may run again."""


_TAKEN_BY_CONSTRAINT: dict[str | None, type[Taken]] = {
    KEY_TAKEN: KeyTaken, PSP_REFERENCE_TAKEN: PspReferenceTaken}


@contextlib.asynccontextmanager
async def write_errors() -> AsyncIterator[None]:
    """Postgres's answers that a write lost a race, as storage errors: the use cases decide
    what each means (replay, conflict, retry) without knowing the driver."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        kind = _TAKEN_BY_CONSTRAINT.get(exc.constraint_name, Taken)
        raise kind(exc.constraint_name) from exc
    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
        raise WriteConflict(type(exc).__name__) from exc


async def instance_id(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval(q.INSTANCE_ID))


async def load_currencies(conn: asyncpg.Connection) -> dict[str, Currency]:
    return {r["code"]: Currency(r["code"], r["scale"], r["amount_max_minor"])
            for r in await conn.fetch(q.LOAD_CURRENCIES)}


def _outcome(row: asyncpg.Record) -> Outcome:
    return Outcome.from_record(transaction_id=row["id"], created_at=row["created_at"],
                               kind=row["kind"], status=row["status"], reason=row["reason"],
                               record=row["outcome"])


async def journal_by_key(conn: asyncpg.Connection, caller: str, key: str,
                         player_id: str | None) -> tuple[bytes, Outcome] | None:
    """The journal row of (caller, key); `player_id` routes the lookup when the operation
    names its player (None for operations named by withdrawal or bonus id)."""
    if player_id is None:
        row = await conn.fetchrow(q.JOURNAL_BY_CALLER_KEY, caller, key)
    else:
        row = await conn.fetchrow(q.JOURNAL_BY_KEY, caller, key, player_id)
    return None if row is None else (bytes(row["request_hash"]), _outcome(row))


async def journal_by_keys(conn: asyncpg.Connection, pairs: list[tuple[str, str]],
                          ) -> dict[tuple[str, str], tuple[bytes, Outcome]]:
    if not pairs:
        return {}
    rows = await conn.fetch(q.JOURNAL_BY_KEYS, [c for c, _ in pairs], [k for _, k in pairs])
    return {(r["caller"], r["idempotency_key"]): (bytes(r["request_hash"]), _outcome(r))
            for r in rows}


@dataclass(slots=True)
class BatchRead:
    """What a batch read once under its locks (queries.BATCH_READ), besides the drafts."""

    tombstones: set[tuple[str, str, str]]  # (caller, bet key, player) asked about, found
    stakes: dict[tuple[int, str, str], tuple[int, int]]  # (wallet, game, round) -> staked
    journal_ids: list[int]
    at: datetime  # the transaction's now(): every journal row's created_at


async def lock_and_read(conn: asyncpg.Connection, wallets: list[tuple[str, str]],
                        wallet_ids: list[int], *, bets: list[tuple[str, str, str]],
                        wins: list[tuple[str, str, str, str]], journal_ids_n: int,
                        ) -> tuple[dict[tuple[str, str], Draft], BatchRead]:
    """Locks the (player, currency) wallets that exist and the wallets by id, all in wallet
    id order, then reads in one more round trip each one's active bonuses, the `bets`'
    tombstones ((caller, key, player)), the stakes of the `wins`' rounds ((player, currency,
    game, round)) and `journal_ids_n` journal ids. Drafts are keyed by (player, currency)."""
    rows = []
    if wallets or wallet_ids:
        rows = await conn.fetch(q.LOCK_WALLETS, [p for p, _ in wallets],
                                [c for _, c in wallets], wallet_ids)
    ids = {(r["player_id"], r["currency"]): r["id"] for r in rows}
    rounds = [(ids[(p, c)], g, r) for p, c, g, r in wins if (p, c) in ids]
    read = await conn.fetchrow(
        q.BATCH_READ, list(ids.values()), [c for c, _, _ in bets], [k for _, k, _ in bets],
        [w for w, _, _ in rounds], [g for _, g, _ in rounds], [r for _, _, r in rounds],
        journal_ids_n, [p for _, _, p in bets])
    bonuses: dict[int, list[BonusState]] = {r["id"]: [] for r in rows}
    for b in read["bonuses"]:
        bonuses[b[0]].append(BonusState(
            bonus_id=b[1], state=b[2], granted_minor=b[3], balance_minor=b[4],
            wagering_required_minor=b[5], wagered_minor=b[6], expires_at=b[7],
            created_at=b[8]))
    stakes = {(w, g, r): (0, 0) for w, g, r in rounds}  # asked about, no row yet: nothing
    stakes.update({(s[0], s[1], s[2]): (s[3], s[4]) for s in read["stakes"]})
    drafts = {(r["player_id"], r["currency"]): Draft(
        wallet_id=r["id"], player_id=r["player_id"], cash=r["cash"], bonus=r["bonus"],
        reserved=r["reserved"], bonuses=bonuses[r["id"]], bonuses_loaded=True,
        guard=guard_of(r["rg"])) for r in rows}
    return drafts, BatchRead(tombstones={(t[0], t[1], t[2]) for t in read["tombstones"]},
                             stakes=stakes, journal_ids=list(read["journal_ids"]),
                             at=read["at"])


async def journal_by_id(conn: asyncpg.Connection, journal_id: int) -> Outcome:
    row = await conn.fetchrow(q.JOURNAL_BY_ID, journal_id)
    if row is None:
        raise AssertionError(f"journal row {journal_id} referenced but missing")
    return _outcome(row)


def _bonus(row: asyncpg.Record) -> BonusState:
    return BonusState(bonus_id=row["id"], state=row["state"], granted_minor=row["granted_minor"],
                      balance_minor=row["balance_minor"],
                      wagering_required_minor=row["wagering_required_minor"],
                      wagered_minor=row["wagered_minor"], expires_at=row["expires_at"],
                      created_at=row["created_at"])


async def create_wallet(conn: asyncpg.Connection, player_id: str, currency: str) -> bool:
    return await conn.fetchrow(q.CREATE_WALLET, player_id, currency) is not None


async def lock_wallet(conn: asyncpg.Connection, player_id: str, currency: str, *,
                      with_bonuses: bool) -> Draft | None:
    row = await conn.fetchrow(q.LOCK_WALLET, player_id, currency)
    if row is None:
        return None
    return await _draft(conn, row, player_id, with_bonuses=with_bonuses)


async def lock_wallet_by_id(conn: asyncpg.Connection, wallet: tuple[int, str], *,
                            with_bonuses: bool) -> tuple[str, Draft]:
    """Locks a wallet known by (id, player id); returns its currency and draft."""
    row = await conn.fetchrow(q.LOCK_WALLET_BY_ID, *wallet)
    if row is None:
        raise AssertionError(f"wallet {wallet[0]} referenced but missing")
    draft = await _draft(conn, row, wallet[1], with_bonuses=with_bonuses)
    return row["currency"], draft


async def _draft(conn: asyncpg.Connection, row: asyncpg.Record, player_id: str, *,
                 with_bonuses: bool) -> Draft:
    bonuses = ([_bonus(b) for b in await conn.fetch(q.ACTIVE_BONUSES, row["id"], player_id)]
               if with_bonuses else [])
    return Draft(wallet_id=row["id"], player_id=player_id, cash=row["cash"], bonus=row["bonus"],
                 reserved=row["reserved"], bonuses=bonuses, bonuses_loaded=with_bonuses,
                 guard=guard_of(row["rg"]))


async def player_breaks(conn: asyncpg.Connection, player_id: str) -> Guard | None:
    """The breaks on any of the player's wallets, merged; None when there are none."""
    merged: Guard | None = None
    # Locked FOR SHARE: an exclusion writing these rows now is waited for, then seen.
    for row in await conn.fetch(q.PLAYER_BREAKS, player_id):
        if row["rg"] is None:
            continue
        found = Guard.from_json(row["rg"])
        merged = found if merged is None else merged.with_breaks_of(found)
    return merged


async def lock_player_wallets(conn: asyncpg.Connection, player_id: str) -> None:
    """Every wallet of the player locked in id order (an exclusion's, before it locks the
    wallet it names, so it takes them in the order batches do)."""
    await conn.fetch(q.LOCK_PLAYER_WALLETS, player_id)


async def apply_to_other_wallets(conn: asyncpg.Connection, player_id: str, wallet_id: int,
                                 change: Callable[[Guard | None], Guard]) -> int:
    """`change` applied to the limits of the player's other wallets, each locked; returns
    how many."""
    rows = await conn.fetch(q.LOCK_OTHER_WALLETS, player_id, wallet_id)
    for row in rows:
        guard = change(guard_of(row["rg"]))
        await conn.execute(q.SET_RG, row["id"], player_id,
                           None if guard.empty else guard.to_json())
    return len(rows)


async def limits(conn: asyncpg.Connection, player_id: str,
                 currency: str) -> tuple[bool, Guard | None]:
    """(the wallet exists, its limits)."""
    row = await conn.fetchrow(q.LIMITS, player_id, currency)
    return (False, None) if row is None else (True, guard_of(row["rg"]))


def guard_of(rg: dict[str, Any] | None) -> Guard | None:
    """The wallet's limits as stored (wallets.rg), None for a player who set nothing."""
    return None if rg is None else Guard.from_json(rg)


def rg_of(draft: Draft) -> dict[str, Any] | None:
    """What wallets.rg keeps of the draft's limits: NULL once nothing is set any more."""
    return None if draft.guard is None or draft.guard.empty else draft.guard.to_json()


async def add_bonuses(conn: asyncpg.Connection, draft: Draft, bonus_ids: Sequence[int]) -> None:
    """Load bonuses a rollback or forfeit refers to that are no longer active."""
    known = {b.bonus_id for b in draft.bonuses}
    missing = [i for i in bonus_ids if i not in known]
    if missing:
        draft.bonuses.extend(_bonus(r) for r in await conn.fetch(q.BONUSES_BY_IDS, missing,
                                                                 draft.player_id))


async def bonus_wallet(conn: asyncpg.Connection, bonus_id: int) -> tuple[int, str] | None:
    """(wallet id, player id) of a bonus."""
    row = await conn.fetchrow(q.BONUS_BY_ID, bonus_id)
    return None if row is None else (int(row["wallet_id"]), str(row["player_id"]))


async def due_bonus_ids(conn: asyncpg.Connection, limit: int) -> list[int]:
    return [r["id"] for r in await conn.fetch(q.DUE_BONUSES, limit)]


async def next_bonus_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(q.NEXT_BONUS_ID))


async def next_withdrawal_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(q.NEXT_WITHDRAWAL_ID))


async def record(conn: asyncpg.Connection, *, caller: str, key: str, fingerprint: bytes,
                 kind: str, draft: Draft, currency: str, outcome_fields: dict[str, Any],
                 details: dict[str, str], postings: Sequence[Posting] | None = None,
                 rejection_reason: str | None = None, rejection_message: str | None = None,
                 journal_id: int | None = None) -> tuple[int, datetime]:
    """Write journal + postings + balances in one statement; returns (id, created_at)."""
    rejected = rejection_reason is not None
    postings = [] if rejected else (draft.postings() if postings is None else postings)
    outcome = outcome_record(currency=currency, fields=outcome_fields,
                             balances=None if rejected else draft.balances(),
                             message=rejection_message)
    row = await conn.fetchrow(
        q.RECORD, caller, key, fingerprint, kind, "rejected" if rejected else "ok",
        rejection_reason, draft.wallet_id, currency, outcome, details,
        [p.account for p in postings], [p.amount_minor for p in postings],
        draft.cash, draft.bonus, draft.reserved, not rejected, draft.player_id, journal_id,
        [p.currency for p in postings], rg_of(draft), draft.guard_changed)
    return row["id"], row["created_at"]


async def write_bonuses(conn: asyncpg.Connection, draft: Draft, *, skip: int | None = None) -> None:
    changed = [b for b in draft.bonuses if b.bonus_id in draft.changed_bonus_ids
               and b.bonus_id != skip]
    if changed:
        await conn.execute(q.UPDATE_BONUSES, [b.bonus_id for b in changed],
                           [b.state for b in changed], [b.balance_minor for b in changed],
                           [b.wagered_minor for b in changed], draft.player_id)


async def insert_bonus(conn: asyncpg.Connection, draft: Draft, bonus: BonusState,
                       journal_id: int) -> None:
    await conn.execute(q.INSERT_BONUS, bonus.bonus_id, draft.wallet_id, bonus.state,
                       bonus.granted_minor, bonus.balance_minor, bonus.wagering_required_minor,
                       bonus.wagered_minor, bonus.expires_at, journal_id, draft.player_id)


async def tombstone_exists(conn: asyncpg.Connection, caller: str, bet_key: str,
                           player_id: str) -> bool:
    return bool(await conn.fetchval(q.TOMBSTONE_EXISTS, caller, bet_key, player_id))


async def insert_tombstone(conn: asyncpg.Connection, caller: str, bet_key: str,
                           draft: Draft, journal_id: int) -> None:
    await conn.execute(q.INSERT_TOMBSTONE, caller, bet_key, draft.wallet_id, journal_id,
                       draft.player_id)


async def bet_key_taken(conn: asyncpg.Connection, caller: str, key: str) -> bool:
    """Whether any player has a bet under (caller, key)."""
    return bool(await conn.fetchval(q.BET_KEY_TAKEN, caller, key))


@dataclass(frozen=True, slots=True)
class StoredBet:
    """A bet as read back for its rollback (queries.BET_BY_KEY)."""

    journal_id: int
    wallet_id: int
    game_id: str
    round_id: str
    cash_minor: int
    bonus_minor: int
    bonus_debits: list[tuple[int, int]]  # (bonus id, amount taken from it)
    wagered: list[tuple[int, int]]  # (bonus id, wagering it counted towards)
    rolled_back_by: int | None  # the rollback's journal id


async def bet_by_key(conn: asyncpg.Connection, caller: str, key: str,
                     player_id: str) -> StoredBet | None:
    row = await conn.fetchrow(q.BET_BY_KEY, caller, key, player_id)
    if row is None:
        return None
    return StoredBet(
        journal_id=row["journal_id"], wallet_id=row["wallet_id"], game_id=row["game_id"],
        round_id=row["round_id"], cash_minor=row["cash_minor"], bonus_minor=row["bonus_minor"],
        bonus_debits=[(d[0], d[1]) for d in row["bonus_debits"]],
        wagered=[(w[0], w[1]) for w in row["wagered"]], rolled_back_by=row["rolled_back_by"])


@dataclass(frozen=True, slots=True)
class BetRow:
    """A bet as wallet.bets stores it (and its round's added stake)."""

    journal_id: int
    wallet_id: int
    player_id: str
    caller: str
    key: str
    game_id: str
    round_id: str
    cash_minor: int
    bonus_minor: int
    bonus_debits: list[tuple[int, int]]
    wagered: list[tuple[int, int]]

    def values(self) -> tuple[Any, ...]:
        """In the column order of queries.INSERT_BET and FLUSH_BATCH's bets."""
        return (self.journal_id, self.wallet_id, self.caller, self.key, self.game_id,
                self.round_id, self.cash_minor, self.bonus_minor, self.bonus_debits,
                self.wagered, self.player_id)


async def insert_bet(conn: asyncpg.Connection, bet: BetRow) -> None:
    """The bet and its stake added to the round."""
    await conn.execute(q.INSERT_BET, *bet.values())


async def mark_bet_rolled_back(conn: asyncpg.Connection, bet_journal_id: int,
                               rollback_journal_id: int, player_id: str) -> None:
    await conn.execute(q.MARK_BET_ROLLED_BACK, bet_journal_id, rollback_journal_id, player_id)


async def round_stake(conn: asyncpg.Connection, draft: Draft, game_id: str,
                      round_id: str) -> tuple[int, int] | None:
    row = await conn.fetchrow(q.ROUND_STAKE, draft.wallet_id, game_id, round_id,
                              draft.player_id)
    return None if row is None else (row[0], row[1])


async def remove_round_stake(conn: asyncpg.Connection, draft: Draft, game_id: str,
                             round_id: str, cash_minor: int, bonus_minor: int) -> None:
    await conn.execute(q.REMOVE_ROUND_STAKE, draft.wallet_id, game_id, round_id, cash_minor,
                       bonus_minor, draft.player_id)


async def withdrawal_wallet(conn: asyncpg.Connection,
                            withdrawal_id: int) -> tuple[int, str] | None:
    """(wallet id, player id) of a withdrawal."""
    row = await conn.fetchrow(q.WITHDRAWAL_WALLET, withdrawal_id)
    return None if row is None else (int(row["wallet_id"]), str(row["player_id"]))


@dataclass(frozen=True, slots=True)
class Withdrawal:
    state: str  # reserved | committed | cancelled | reversed
    amount_minor: int
    psp: str
    final_journal_id: int | None
    reversal_journal_id: int | None


async def withdrawal(conn: asyncpg.Connection, withdrawal_id: int,
                     player_id: str) -> Withdrawal:
    row = await conn.fetchrow(q.WITHDRAWAL, withdrawal_id, player_id)
    if row is None:
        raise AssertionError(f"withdrawal {withdrawal_id} vanished under its wallet lock")
    return Withdrawal(state=row["state"], amount_minor=row["amount_minor"], psp=row["psp"],
                      final_journal_id=row["final_journal_id"],
                      reversal_journal_id=row["reversal_journal_id"])


async def insert_withdrawal(conn: asyncpg.Connection, withdrawal_id: int, draft: Draft,
                            amount_minor: int, psp: str, journal_id: int) -> None:
    await conn.execute(q.INSERT_WITHDRAWAL, withdrawal_id, draft.wallet_id, amount_minor, psp,
                       journal_id, draft.player_id)


async def finish_withdrawal(conn: asyncpg.Connection, withdrawal_id: int, state: str,
                            journal_id: int, reason: str | None, player_id: str) -> None:
    status = await conn.execute(q.FINISH_WITHDRAWAL, withdrawal_id, state, journal_id, reason,
                                player_id)
    if status != "UPDATE 1":
        raise AssertionError(f"withdrawal {withdrawal_id} left 'reserved' under its wallet lock")


async def reverse_withdrawal(conn: asyncpg.Connection, withdrawal_id: int, journal_id: int,
                             reason: str, player_id: str) -> None:
    status = await conn.execute(q.REVERSE_WITHDRAWAL, withdrawal_id, journal_id, reason,
                                player_id)
    if status != "UPDATE 1":
        raise AssertionError(f"withdrawal {withdrawal_id} left 'committed' under its wallet lock")


async def balance(conn: asyncpg.Connection, player_id: str,
                  currency: str) -> tuple[int, Balances] | None:
    """The wallet's id and balances, read without a lock; None when it has none."""
    row = await conn.fetchrow(q.BALANCE, player_id, currency)
    if row is None:
        return None
    return row["id"], Balances(row["cash"], row["bonus"], row["reserved"])


async def list_bonuses(conn: asyncpg.Connection, player_id: str, currency: str,
                       include_inactive: bool) -> list[BonusState]:
    return [_bonus(r) for r in await conn.fetch(q.LIST_BONUSES, player_id, currency,
                                                include_inactive)]


async def transaction_by_id(conn: asyncpg.Connection,
                            journal_id: int) -> TransactionView | None:
    row = await conn.fetchrow(q.TRANSACTION_BY_ID, journal_id)
    return None if row is None else _view(row)


async def transaction_id_by_key(conn: asyncpg.Connection, caller: str, key: str) -> int | None:
    return await conn.fetchval(q.TRANSACTION_ID_BY_KEY, caller, key)  # type: ignore[no-any-return]


async def list_transactions(conn: asyncpg.Connection, wallet_id: int, before_id: int,
                            limit: int) -> list[TransactionView]:
    return [_view(r) for r in await conn.fetch(q.LIST_TRANSACTIONS, wallet_id, before_id, limit)]


def _view(row: asyncpg.Record) -> TransactionView:
    outcome: dict[str, Any] = row["outcome"]
    raw = outcome.get("balances")
    details = {k: str(v) for k, v in row["details"].items()}
    for name, value in outcome.get("fields", {}).items():
        details.setdefault(name, str(value))
    return TransactionView(
        transaction_id=row["id"], kind=row["kind"], status=row["status"], reason=row["reason"],
        player_id=row["player_id"], currency=row["currency"], caller=row["caller"],
        idempotency_key=row["idempotency_key"], created_at=row["created_at"],
        postings=[Posting(a, m, c) for a, m, c in zip(row["accounts"], row["amounts"],
                                                      row["currencies"], strict=True)],
        balances=Balances(*raw) if raw is not None else None, details=details)
