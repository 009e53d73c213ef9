"""The handler of each command: lock its wallet, apply the money rules, record the result.

Every handler runs inside a batch's transaction and is handed that batch (batch.py): the
wallets it locked and read up front, a journal id per operation, and, for bets and wins,
the rows they gather for one set-based write. A single call is a batch of one, so there is
one way to write, whatever the load.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from wallet_core.domain import bonus as bonus_policy
from wallet_core.domain import commands as cmd
from wallet_core.domain import errors, rules
from wallet_core.domain.errors import InvalidField, NotFound, Rejected
from wallet_core.domain.ledger import BonusState, Draft
from wallet_core.domain.limits import Guard
from wallet_core.domain.outcome import Outcome
from wallet_core.operations.batch import Batch
from wallet_core.operations.calls import Call
from wallet_core.storage import repo

Handler = Callable[[asyncpg.Connection, Batch, Call], Awaitable[Outcome]]


class Handlers:
    """One handler per command; `clock` is the time the rules see (bets expire bonuses)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._by_command: dict[type[cmd.Command], Handler] = {
            cmd.OpenWallet: self._open, cmd.Deposit: self._psp_transfer,
            cmd.ReserveWithdrawal: self._reserve, cmd.CommitWithdrawal: self._finish_withdrawal,
            cmd.CancelWithdrawal: self._finish_withdrawal,
            cmd.ReverseWithdrawal: self._reverse_withdrawal, cmd.Bet: self._bet,
            cmd.Win: self._win, cmd.Rollback: self._rollback, cmd.GrantBonus: self._grant,
            cmd.ForfeitBonus: self._end_bonus, cmd.ExpireBonus: self._end_bonus,
            cmd.Chargeback: self._psp_transfer, cmd.Adjust: self._adjust,
            cmd.SetLimits: self._set_limits, cmd.Exclude: self._exclude,
            cmd.Restrict: self._exclude,
        }

    async def run(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        return await self._by_command[type(call.command)](conn, batch, call)

    # -- shared steps ------------------------------------------------------------------------

    async def _lock(self, conn: asyncpg.Connection, batch: Batch, c: cmd.WalletCommand, *,
                    with_bonuses: bool) -> Draft:
        key = (c.player_id, c.currency)
        if (found := batch.drafts.get(key)) is not None:
            # Locked and read when the batch began, or as its last operation left it.
            draft: Draft | None = found.fork() if with_bonuses else found.without_bonuses()
        else:  # a solo batch, a wallet opened by this batch, or one written at once by an
            # earlier operation of it (a later set-based one needs its bonuses)
            draft = await repo.lock_wallet(conn, c.player_id, c.currency,
                                           with_bonuses=with_bonuses or not batch.solo)
        if draft is None:
            raise NotFound(f"player_id has no {c.currency} wallet; open it first",
                           reason=errors.WALLET_NOT_FOUND)
        batch.handed[key] = draft
        return draft

    async def _settle(self, conn: asyncpg.Connection, batch: Batch, call: Call, draft: Draft,
                      currency: str, rule: Callable[[], dict[str, Any]],
                      details: dict[str, str],
                      after: Callable[[int], Awaitable[None]] | None = None,
                      new_bonus_id: int | None = None) -> Outcome:
        """Apply a rule to the draft and record the result, or record its rejection."""
        c = call.command
        if batch.set_based:
            return await self._gather(batch, call, draft, currency, rule, details, after)
        # The id drawn for this operation keeps journal order = applied order.
        journal_id = batch.next_journal_id()
        try:
            fields = rule()
        except Rejected as rejection:
            tid, at = await repo.record(
                conn, caller=call.caller, key=c.idempotency_key, fingerprint=call.fingerprint,
                kind=c.kind, draft=draft, currency=currency, outcome_fields={},
                details=details, rejection_reason=rejection.reason,
                rejection_message=rejection.message, journal_id=journal_id)
            rejection.metadata["transaction_id"] = str(tid)
            return Outcome(tid, at, c.kind, currency, None, {}, rejection)
        draft.check_invariants()
        tid, at = await repo.record(
            conn, caller=call.caller, key=c.idempotency_key, fingerprint=call.fingerprint,
            kind=c.kind, draft=draft, currency=currency, outcome_fields=fields, details=details,
            journal_id=journal_id)
        # A bonus granted now is inserted by `after` with its final state, not updated.
        await repo.write_bonuses(conn, draft, skip=new_bonus_id)
        if after is not None:
            await after(tid)
        return Outcome(tid, at, c.kind, currency, draft.balances(), fields)

    async def _gather(self, batch: Batch, call: Call, draft: Draft, currency: str,
                      rule: Callable[[], dict[str, Any]], details: dict[str, str],
                      after: Callable[[int], Awaitable[None]] | None) -> Outcome:
        """_settle for a set-based operation: the same rows, gathered for the batch's write."""
        c = call.command
        tid = batch.next_journal_id()
        assert tid is not None, "set-based operations run only in shared batches"

        def gather(fields: dict[str, Any], rejection: Rejected | None = None) -> None:
            batch.writes.record(
                index=batch.index, journal_id=tid, caller=call.caller, key=c.idempotency_key,
                fingerprint=call.fingerprint, kind=c.kind, draft=draft, currency=currency,
                outcome_fields=fields, details=details,
                rejection_reason=rejection.reason if rejection else None,
                rejection_message=rejection.message if rejection else None)

        try:
            fields = rule()
        except Rejected as rejection:
            gather({}, rejection)
            rejection.metadata["transaction_id"] = str(tid)
            return Outcome(tid, batch.at, c.kind, currency, None, {}, rejection)
        draft.check_invariants()
        gather(fields)
        if after is not None:
            await after(tid)
        return Outcome(tid, batch.at, c.kind, currency, draft.balances(), fields)

    # -- handlers, one per command -----------------------------------------------------------

    async def _open(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.OpenWallet)
        created = await repo.create_wallet(conn, c.player_id, c.currency)
        draft = await self._lock(conn, batch, c, with_bonuses=False)
        if created and (breaks := await repo.player_breaks(conn, c.player_id)) is not None:
            # A wallet opened during a break is under it too (the break is the player's).
            draft.set_guard((draft.guard or Guard()).with_breaks_of(breaks))
        return await self._settle(conn, batch, call, draft, c.currency,
                                  lambda: {"created": created}, {"player_id": c.player_id})

    async def _set_limits(self, conn: asyncpg.Connection, batch: Batch,
                          call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.SetLimits)
        draft = await self._lock(conn, batch, c, with_bonuses=False)
        now = self._clock()

        def rule() -> dict[str, Any]:
            guard = (draft.guard or Guard()).with_changes(c.changes, now, tz=c.time_zone)
            draft.set_guard(guard)
            return {"limits": guard.to_json()}

        return await self._settle(conn, batch, call, draft, c.currency, rule,
                                  {"changes": str(len(c.changes))})

    async def _exclude(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        """The break (or restriction) goes on the wallet named (its journal row) and on every
        other wallet of the player, each under its row lock."""
        c = call.command
        assert isinstance(c, cmd.Exclude | cmd.Restrict)
        await repo.lock_player_wallets(conn, c.player_id)
        draft = await self._lock(conn, batch, c, with_bonuses=False)
        now = self._clock()

        def rule() -> dict[str, Any]:
            guard = c.apply(draft.guard or Guard(), now)
            draft.set_guard(guard)
            return {"limits": guard.to_json()}

        async def after(tid: int) -> None:
            del tid
            await repo.apply_to_other_wallets(
                conn, c.player_id, draft.wallet_id,
                lambda guard: c.apply(guard or Guard(), now))

        details = ({"break": c.break_kind} if isinstance(c, cmd.Exclude)
                   else {"restriction": c.reason or "lifted"})
        return await self._settle(conn, batch, call, draft, c.currency, rule, details, after)

    async def _psp_transfer(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        """Deposit and Chargeback: cash against a PSP account, keyed by psp_reference."""
        c = call.command
        assert isinstance(c, cmd.Deposit | cmd.Chargeback)
        draft = await self._lock(conn, batch, c, with_bonuses=False)
        now = self._clock()

        def rule() -> dict[str, Any]:
            if isinstance(c, cmd.Deposit):
                return rules.deposit(draft, c, now)
            return rules.chargeback(draft, c)

        details = {"psp": c.psp, "psp_reference": c.psp_reference}
        if isinstance(c, cmd.Deposit) and c.conversion is not None:
            details.update(conversion_details(c.conversion))
        return await self._settle(conn, batch, call, draft, c.currency, rule, details)

    async def _reserve(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.ReserveWithdrawal)
        draft = await self._lock(conn, batch, c, with_bonuses=False)
        withdrawal_id = await repo.next_withdrawal_id(conn)

        def rule() -> dict[str, Any]:
            rules.reserve_withdrawal(draft, c)
            return {"withdrawal_id": str(withdrawal_id)}

        async def after(tid: int) -> None:
            await repo.insert_withdrawal(conn, withdrawal_id, draft, c.amount_minor, c.psp, tid)

        return await self._settle(conn, batch, call, draft, c.currency, rule, {"psp": c.psp}, after)

    async def _lock_withdrawal(self, conn: asyncpg.Connection,
                               withdrawal_id: int) -> tuple[str, Draft, repo.Withdrawal]:
        """Lock the withdrawal's wallet, then read the withdrawal (stable under that lock)."""
        wallet = await repo.withdrawal_wallet(conn, withdrawal_id)
        if wallet is None:
            raise NotFound("withdrawal_id: no such withdrawal", reason=errors.WITHDRAWAL_NOT_FOUND)
        currency, draft = await repo.lock_wallet_by_id(conn, wallet, with_bonuses=False)
        return currency, draft, await repo.withdrawal(conn, withdrawal_id, draft.player_id)

    async def _finish_withdrawal(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.CommitWithdrawal | cmd.CancelWithdrawal)
        currency, draft, w = await self._lock_withdrawal(conn, c.withdrawal_id)
        target = "committed" if isinstance(c, cmd.CommitWithdrawal) else "cancelled"
        if w.state == target:
            # Repeating the same final step is a replay of the first one, whatever its key.
            assert w.final_journal_id is not None, "a final withdrawal names its journal row"
            return (await repo.journal_by_id(conn, w.final_journal_id)).as_replay()
        reason = c.reason if isinstance(c, cmd.CancelWithdrawal) else None

        def rule() -> dict[str, Any]:
            if w.state != "reserved":
                raise errors.rejected(errors.WITHDRAWAL_ALREADY_FINAL,
                                      f"the withdrawal is already {w.state}")
            if target == "committed":
                return rules.commit_withdrawal(draft, w.amount_minor, w.psp)
            return rules.cancel_withdrawal(draft, w.amount_minor)

        async def after(tid: int) -> None:
            await repo.finish_withdrawal(conn, c.withdrawal_id, target, tid, reason,
                                         draft.player_id)

        details = {"withdrawal_id": str(c.withdrawal_id), "psp": w.psp}
        if reason:
            details["reason"] = reason
        return await self._settle(conn, batch, call, draft, currency, rule, details, after)

    async def _reverse_withdrawal(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        """The PSP returned a committed payout (paid, then failed): credit it back to cash."""
        c = call.command
        assert isinstance(c, cmd.ReverseWithdrawal)
        currency, draft, w = await self._lock_withdrawal(conn, c.withdrawal_id)
        if w.state == "reversed":
            # Like a repeated commit or cancel: the first reversal's answer, whatever the key.
            assert w.reversal_journal_id is not None, "a reversal names its journal row"
            return (await repo.journal_by_id(conn, w.reversal_journal_id)).as_replay()

        def rule() -> dict[str, Any]:
            if w.state != "committed":
                raise errors.rejected(errors.WITHDRAWAL_NOT_COMMITTED,
                                      f"only a committed withdrawal can be reversed; this one "
                                      f"is {w.state}")
            return rules.reverse_withdrawal(draft, w.amount_minor, w.psp)

        async def after(tid: int) -> None:
            await repo.reverse_withdrawal(conn, c.withdrawal_id, tid, c.reason, draft.player_id)

        details = {"withdrawal_id": str(c.withdrawal_id), "psp": w.psp, "reason": c.reason}
        return await self._settle(conn, batch, call, draft, currency, rule, details, after)

    async def _bet(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Bet)
        draft = await self._lock(conn, batch, c, with_bonuses=True)
        if batch.tombstones is not None:
            tombstoned = (call.caller, c.idempotency_key, c.player_id) in batch.tombstones
        else:
            tombstoned = await repo.tombstone_exists(conn, call.caller, c.idempotency_key,
                                                     c.player_id)
        now = self._clock()
        record: list[rules.BetRecord] = []

        def rule() -> dict[str, Any]:
            if tombstoned:
                raise errors.rejected(errors.ALREADY_ROLLED_BACK,
                                      "this bet was rolled back before it arrived")
            record.append(rules.bet(draft, c, now))
            return {"cash_minor": record[0].cash_minor, "bonus_minor": record[0].bonus_minor}

        async def after(tid: int) -> None:
            r = record[0]
            bet = repo.BetRow(journal_id=tid, wallet_id=draft.wallet_id,
                              player_id=draft.player_id, caller=call.caller,
                              key=c.idempotency_key, game_id=c.game_id, round_id=c.round_id,
                              cash_minor=r.cash_minor, bonus_minor=r.bonus_minor,
                              bonus_debits=r.bonus_debits, wagered=r.wagered)
            if not batch.set_based:  # a solo batch writes at once
                await repo.insert_bet(conn, bet)
                return
            batch.writes.bet(bet)
            round_key = (draft.wallet_id, c.game_id, c.round_id)
            if (staked := batch.stakes.get(round_key)) is not None:  # a win in the batch reads it
                batch.stakes[round_key] = (staked[0] + r.cash_minor, staked[1] + r.bonus_minor)

        return await self._settle(conn, batch, call, draft, c.currency, rule,
                                  {"game_id": c.game_id, "round_id": c.round_id}, after)

    async def _win(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Win)
        draft = await self._lock(conn, batch, c, with_bonuses=True)
        staked = await self._round_stake(conn, batch, draft, c.game_id, c.round_id)
        stake = rules.RoundStake(*staked) if staked is not None else None
        now = self._clock()
        return await self._settle(conn, batch, call, draft, c.currency,
                                  lambda: rules.win(draft, c, stake, now),
                                  {"game_id": c.game_id, "round_id": c.round_id})

    async def _round_stake(self, conn: asyncpg.Connection, batch: Batch, draft: Draft,
                           game_id: str, round_id: str) -> tuple[int, int] | None:
        key = (draft.wallet_id, game_id, round_id)
        if key not in batch.stakes:  # not read with the locks, or reset by a rollback
            await batch.writes.flush(conn)
            batch.stakes[key] = await repo.round_stake(conn, draft, game_id,
                                                       round_id) or (0, 0)
        return batch.stakes[key]

    async def _rollback(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Rollback)
        draft = await self._lock(conn, batch, c, with_bonuses=True)
        bet = await repo.bet_by_key(conn, call.caller, c.bet_idempotency_key, c.player_id)
        details = {"game_id": c.game_id, "bet_idempotency_key": c.bet_idempotency_key}
        if bet is None:
            # Not this player's: a bet of another player under this key is a caller's
            # mistake, not a bet never seen (the only lookup here that fans out on Citus,
            # and only for rollbacks of unknown bets).
            if await repo.bet_key_taken(conn, call.caller, c.bet_idempotency_key):
                raise InvalidField("bet_idempotency_key", "names a bet of another player")
            return await self._tombstone(conn, batch, call, draft, c, details)
        if bet.wallet_id != draft.wallet_id:
            raise InvalidField("bet_idempotency_key", "names a bet of another wallet")
        if bet.game_id != c.game_id:
            raise InvalidField("game_id", "differs from the game_id of the bet")
        details["round_id"] = bet.round_id
        if bet.rolled_back_by is not None:
            return await self._settle(conn, batch, call, draft, c.currency,
                                      lambda: {"outcome": "already_rolled_back",
                                               "cash_minor": 0, "bonus_minor": 0}, details)
        record = rules.BetRecord(bet.cash_minor, bet.bonus_minor, bet.bonus_debits, bet.wagered)
        await repo.add_bonuses(conn, draft, [d[0] for d in record.bonus_debits])
        now = self._clock()

        async def after(tid: int) -> None:
            await repo.mark_bet_rolled_back(conn, bet.journal_id, tid, draft.player_id)
            await repo.remove_round_stake(conn, draft, c.game_id, bet.round_id,
                                          record.cash_minor, record.bonus_minor)

        return await self._settle(conn, batch, call, draft, c.currency,
                                  lambda: rules.rollback(draft, c, record, now), details, after)

    async def _tombstone(self, conn: asyncpg.Connection, batch: Batch, call: Call, draft: Draft,
                         c: cmd.Rollback, details: dict[str, str]) -> Outcome:
        """Rollback of a bet never seen: succeed, move nothing, refuse the bet if it comes."""
        exists = await repo.tombstone_exists(conn, call.caller, c.bet_idempotency_key,
                                             c.player_id)

        async def after(tid: int) -> None:
            if not exists:
                await repo.insert_tombstone(conn, call.caller, c.bet_idempotency_key, draft,
                                            tid)

        return await self._settle(conn, batch, call, draft, c.currency,
                                  lambda: {"outcome": "bet_not_found", "cash_minor": 0,
                                           "bonus_minor": 0}, details, after)

    async def _grant(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.GrantBonus)
        now = self._clock()
        if c.expires_at <= now:
            raise InvalidField("expires_at", "must be in the future")
        draft = await self._lock(conn, batch, c, with_bonuses=True)
        bonus = BonusState(bonus_id=await repo.next_bonus_id(conn), state="active",
                           granted_minor=c.amount_minor, balance_minor=0,
                           wagering_required_minor=c.wagering_required_minor, wagered_minor=0,
                           expires_at=c.expires_at, created_at=now)

        def rule() -> dict[str, Any]:
            rules.grant_bonus(draft, c, bonus, now)
            return {"bonus_id": str(bonus.bonus_id)}

        async def after(tid: int) -> None:
            await repo.insert_bonus(conn, draft, bonus, tid)

        return await self._settle(conn, batch, call, draft, c.currency, rule,
                                  {"bonus_id": str(bonus.bonus_id)}, after,
                                  new_bonus_id=bonus.bonus_id)

    async def _end_bonus(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        """ForfeitBonus, and the sweeper's ExpireBonus (which only expires what is due)."""
        c = call.command
        assert isinstance(c, cmd.ForfeitBonus | cmd.ExpireBonus)
        wallet = await repo.bonus_wallet(conn, c.bonus_id)
        if wallet is None:
            raise NotFound("bonus_id: no such bonus", reason=errors.BONUS_NOT_FOUND)
        currency, draft = await repo.lock_wallet_by_id(conn, wallet, with_bonuses=True)
        await repo.add_bonuses(conn, draft, [c.bonus_id])
        now = self._clock()
        if isinstance(c, cmd.ForfeitBonus):
            def rule() -> dict[str, Any]:
                return rules.forfeit_bonus(draft, c.bonus_id, now)
        else:
            def rule() -> dict[str, Any]:
                return {"expired": [list(e) for e in bonus_policy.expire_due(draft, now)]}
        return await self._settle(conn, batch, call, draft, currency, rule,
                                  {"bonus_id": str(c.bonus_id)})

    async def _adjust(self, conn: asyncpg.Connection, batch: Batch, call: Call) -> Outcome:
        c = call.command
        assert isinstance(c, cmd.Adjust)
        draft = await self._lock(conn, batch, c, with_bonuses=True)
        now = self._clock()
        return await self._settle(conn, batch, call, draft, c.currency,
                                  lambda: rules.adjust(draft, c, now),
                                  {"bucket": c.bucket, "reason": c.reason})


def conversion_details(c: cmd.Conversion) -> dict[str, str]:
    """A converted deposit's journal details (`wallet-core check` reads fx_paid_currency
    and fx_paid_minor; support reads them all in GetTransaction)."""
    return {"fx_paid_currency": c.paid_currency, "fx_paid_minor": str(c.paid_minor),
            "fx_rate": c.rate, "fx_spread_bps": str(c.spread_bps),
            "fx_rate_source": c.rate_source,
            "fx_rate_time": c.rate_time.isoformat().replace("+00:00", "Z")}
