"""Calls and their answers: the pure bookkeeping of idempotency inside a batch.

A batch may carry the same (caller, key) twice, calls already answered by Redis or the
journal, and, when atomic, calls that refuse the whole batch. These functions decide who
answers what without any I/O; the batch engine (batches.py) and the front door (front.py)
call them.
"""

from __future__ import annotations

from dataclasses import dataclass

from wallet_core.domain import commands as cmd
from wallet_core.domain import errors
from wallet_core.domain.errors import WalletError
from wallet_core.domain.outcome import Outcome


@dataclass(frozen=True, slots=True)
class Call:
    """One caller's command, with the fingerprint that says what 'the same request' is."""

    caller: str
    command: cmd.Command
    fingerprint: bytes



def pair(call: Call) -> tuple[str, str]:
    return call.caller, call.command.idempotency_key


def cache_key(call: Call) -> tuple[str, str, str]:
    """(caller, key, player): the player, when the operation names one, places the cached
    outcome with the player's other keys (a Redis Cluster hash tag)."""
    c = call.command
    return call.caller, c.idempotency_key, c.player_id if isinstance(c, cmd.WalletCommand) else ""


def replay_or_error(call: Call, found: tuple[bytes, Outcome]) -> Outcome | WalletError:
    try:
        return replay(call, *found)
    except WalletError as exc:
        return exc


def dedupe(calls: list[Call]) -> tuple[list[Outcome | Exception | None], list[int]]:
    """Empty results, and the indexes of the first call of each (caller, key): a repeated
    key inside one batch is answered by replaying its first call (`with_duplicates`)."""
    firsts = first_of(calls)
    return [None] * len(calls), [i for i, j in enumerate(firsts) if i == j]


def conflicting_repeat(calls: list[Call]) -> tuple[int, WalletError] | None:
    """The first repeat of a key inside the batch that carries a different request."""
    for i, (call, j) in enumerate(zip(calls, first_of(calls), strict=True)):
        if j != i and call.fingerprint != calls[j].fingerprint:
            return i, errors.Conflict(
                "idempotency_key appears twice in the batch with different requests",
                reason=errors.IDEMPOTENCY_KEY_REUSED, metadata={"field": "idempotency_key"})
    return None


def first_of(calls: list[Call]) -> list[int]:
    """For each call, the index of the first call in the batch with its (caller, key)."""
    first: dict[tuple[str, str], int] = {}
    return [first.setdefault(pair(call), i) for i, call in enumerate(calls)]


def with_duplicates(calls: list[Call], results: list[Outcome | Exception | None],
                     ) -> list[Outcome | Exception]:
    done: list[Outcome | Exception] = []
    for i, (call, j) in enumerate(zip(calls, first_of(calls), strict=True)):
        own = results[i]
        if j != i and own is not None:  # a repeat that ran on its own (see _run_batch)
            done.append(own)
            continue
        result = results[j]
        assert result is not None, "every first call of a key has a result"
        if j != i and isinstance(result, Outcome):
            result = replay_or_error(call, (calls[j].fingerprint, result))
        done.append(result)
    return done


def refusal(results: list[Outcome | Exception | None]) -> tuple[int, WalletError] | None:
    """An atomic batch runs only if nothing in it is already refused: a reused key, a
    recorded rejection being replayed, an invalid repeat inside the batch."""
    for i, r in enumerate(results):
        if isinstance(r, WalletError):
            return i, r
        if isinstance(r, Outcome) and r.rejection is not None:
            return i, r.rejection
    return None


def wallets_of(calls: list[Call]) -> list[tuple[str, str]]:
    return sorted({(c.command.player_id, c.command.currency) for c in calls
                   if isinstance(c.command, cmd.WalletCommand)})


def rolled_back(results: list[Outcome | Exception | None],
                 failed: tuple[int, WalletError]) -> list[Outcome | WalletError]:
    """An atomic batch undone: the failing call carries its own error, calls already
    recorded earlier keep their replays (they did happen), the others say they did not."""
    index, error = failed
    done: list[Outcome | WalletError] = []
    for i, r in enumerate(results):
        if i == index:
            done.append(error)
        elif isinstance(r, Outcome) and r.rejection is None:
            done.append(r)
        else:
            done.append(errors.Aborted(
                f"not applied: operations[{index}] failed and the atomic batch was rolled "
                "back", reason=errors.BATCH_ROLLED_BACK, metadata={"failed_index": str(index)}))
    return done


def duplicate_psp_reference() -> errors.Conflict:
    """A deposit or chargeback whose psp_reference another key already recorded."""
    return errors.Conflict(
        "this psp_reference was already credited under another idempotency key",
        reason=errors.DUPLICATE_PSP_REFERENCE)


def replay(call: Call, fingerprint: bytes, outcome: Outcome) -> Outcome:
    if fingerprint != call.fingerprint:
        raise errors.Conflict(
            "idempotency_key was already used for a different request; use a new key for a "
            "new operation", reason=errors.IDEMPOTENCY_KEY_REUSED,
            metadata={"field": "idempotency_key", "transaction_id": str(outcome.transaction_id)})
    return outcome.as_replay()

