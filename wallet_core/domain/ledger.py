"""Double-entry postings and the Draft that builds them.

Every operation is written as moves between accounts. A player's buckets are accounts
(`player:<wallet id>:cash|bonus|reserved`); the counter-parties are system accounts:

    house:<game id>       the game provider's house side of bets, wins and rollbacks
    psp:<psp>             PSP clearing: deposits in, committed withdrawals out (and back
                          in when the PSP reverses a payout)
    chargebacks:<psp>     money taken back by a PSP's chargeback
    bonus_pool            source of granted bonus funds, sink of forfeited/expired ones
    adjustments           support corrections
    fx:<currency>         the exchange desk's position in one currency: a converted deposit
                          puts the paid currency in (fx:BTC +paid) and takes the credit out
                          of the wallet's (fx:EUR -credited); one account per currency
                          because a transaction holds one posting per account

A move debits one account and credits another by the same amount, so the postings of a
transaction always sum to zero and, per currency, all accounts together sum to zero.
System accounts have no balance row (no hot row every bet would lock): their balances are
the sum of their postings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from wallet_core.domain import errors
from wallet_core.domain.limits import Guard
from wallet_core.domain.money import BALANCE_MAX_MINOR

BONUS_POOL = "bonus_pool"
ADJUSTMENTS = "adjustments"


class Bucket(StrEnum):
    CASH = "cash"
    BONUS = "bonus"
    RESERVED = "reserved"


def house_account(game_id: str) -> str:
    return f"house:{game_id}"


def psp_account(psp: str) -> str:
    return f"psp:{psp}"


def chargeback_account(psp: str) -> str:
    return f"chargebacks:{psp}"


def fx_account(currency: str) -> str:
    return f"fx:{currency}"


def player_account(wallet_id: int, bucket: Bucket) -> str:
    return f"player:{wallet_id}:{bucket.value}"


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    amount_minor: int
    # None: the transaction's (wallet's) currency; set only for the paid-currency side of a
    # converted deposit.
    currency: str | None = None


@dataclass(slots=True)
class BonusState:
    """One bonus as stored; `balance_minor` is its share of the wallet's bonus bucket."""

    bonus_id: int
    state: str  # active | converted | forfeited | expired
    granted_minor: int
    balance_minor: int
    wagering_required_minor: int
    wagered_minor: int
    expires_at: datetime
    created_at: datetime

    @property
    def active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True, slots=True)
class Balances:
    cash: int
    bonus: int
    reserved: int

    @property
    def available(self) -> int:
        """What a bet may spend: nothing while in debt, else cash plus bonus."""
        return self.cash + self.bonus if self.cash >= 0 else 0


Account = Bucket | str


@dataclass(slots=True)
class Draft:
    """A locked wallet's balances and bonuses, changed by balanced moves.

    Built from the locked rows, mutated by the operation's rules, then written back in the
    same transaction. Bonuses are ordered oldest first (the order wagering and spending use).
    """

    wallet_id: int
    player_id: str
    cash: int
    bonus: int
    reserved: int
    bonuses: list[BonusState] = field(default_factory=list)
    # False when the operation has no business with bonuses and did not load them.
    bonuses_loaded: bool = True
    _net: dict[str, int] = field(default_factory=dict)
    # Postings between system accounts in another currency (a conversion's paid side):
    # (account, currency) -> amount. Never a player bucket: buckets are the wallet's currency.
    _foreign: dict[tuple[str, str], int] = field(default_factory=dict)
    changed_bonus_ids: set[int] = field(default_factory=set)
    # Responsible-gambling limits and breaks (domain.limits), None when the player set none;
    # written back only when an operation changed them.
    guard: Guard | None = None
    guard_changed: bool = False

    def set_guard(self, guard: Guard) -> None:
        self.guard = guard
        self.guard_changed = True

    def without_bonuses(self) -> Draft:
        """The same wallet for an operation that has no business with bonuses (as if they
        had not been loaded). Only for a draft nothing has moved yet."""
        assert not self._net and not self._foreign and not self.changed_bonus_ids, \
            "a used draft is never reused"
        return Draft(wallet_id=self.wallet_id, player_id=self.player_id, cash=self.cash,
                     bonus=self.bonus, reserved=self.reserved, bonuses=[],
                     bonuses_loaded=False, guard=self.guard)

    def fork(self) -> Draft:
        """A copy for the next operation on this wallet inside one batch: the operation may
        be rejected halfway through its rule, and then this draft must be as it was."""
        assert not self._net and not self._foreign and not self.changed_bonus_ids, \
            "only a settled draft is forked"
        return Draft(wallet_id=self.wallet_id, player_id=self.player_id, cash=self.cash,
                     bonus=self.bonus, reserved=self.reserved,
                     bonuses=[replace(b) for b in self.bonuses],
                     bonuses_loaded=self.bonuses_loaded, guard=self.guard)

    def settled(self, *, bonuses_from: Draft | None = None) -> Draft:
        """This wallet after its operation was recorded, ready to be forked for the next
        one; an operation that did not load bonuses takes them from the draft before it."""
        keep = bonuses_from if not self.bonuses_loaded and bonuses_from is not None else self
        return Draft(wallet_id=self.wallet_id, player_id=self.player_id, cash=self.cash,
                     bonus=self.bonus, reserved=self.reserved, bonuses=keep.bonuses,
                     bonuses_loaded=keep.bonuses_loaded, guard=self.guard)

    def move(self, amount_minor: int, *, source: Account, dest: Account) -> None:
        if amount_minor < 0:
            raise AssertionError(f"a move is never negative (got {amount_minor})")
        if amount_minor == 0:
            return
        self._apply(source, -amount_minor)
        self._apply(dest, amount_minor)

    def move_foreign(self, amount_minor: int, *, currency: str, source: str,
                     dest: str) -> None:
        """A balanced move between two system accounts in `currency`, which is not the
        wallet's: it changes no bucket."""
        if amount_minor <= 0:
            raise AssertionError(f"a foreign move is positive (got {amount_minor})")
        for account, delta in ((source, -amount_minor), (dest, amount_minor)):
            if account.startswith("player:"):
                raise AssertionError("player buckets hold only the wallet's currency")
            key = (account, currency)
            self._foreign[key] = self._foreign.get(key, 0) + delta

    def _apply(self, account: Account, delta: int) -> None:
        if isinstance(account, Bucket):
            name = account.value
            balance = getattr(self, name) + delta
            if balance > BALANCE_MAX_MINOR:
                raise errors.rejected(errors.BALANCE_LIMIT_EXCEEDED,
                                      f"the {name} balance would exceed its limit")
            setattr(self, name, balance)
            key = player_account(self.wallet_id, account)
        else:
            key = account
        self._net[key] = self._net.get(key, 0) + delta

    def postings(self) -> list[Posting]:
        own = [Posting(a, m) for a, m in sorted(self._net.items()) if m != 0]
        return own + [Posting(a, m, c) for (a, c), m in sorted(self._foreign.items()) if m != 0]

    def balances(self) -> Balances:
        return Balances(self.cash, self.bonus, self.reserved)

    def active_bonuses(self) -> list[BonusState]:
        return [b for b in self.bonuses if b.active]

    def touch(self, bonus: BonusState) -> None:
        self.changed_bonus_ids.add(bonus.bonus_id)

    def check_invariants(self) -> None:
        """Broken invariants are bugs: fail loudly before anything is written."""
        if self.bonus < 0 or self.reserved < 0:
            raise AssertionError(f"negative bucket on wallet {self.wallet_id}")
        held = sum(b.balance_minor for b in self.active_bonuses())
        if self.bonuses_loaded and held != self.bonus:
            raise AssertionError(
                f"wallet {self.wallet_id}: bonus bucket {self.bonus} != active bonuses {held}")
        if sum(self._net.values()) != 0:
            raise AssertionError("postings do not balance")
        for currency in {c for _, c in self._foreign}:
            if sum(m for (_, c), m in self._foreign.items() if c == currency) != 0:
                raise AssertionError(f"postings in {currency} do not balance")
