"""Property-based fuzzing of every WalletService request over real gRPC.

Hypothesis builds requests field by field from the proto descriptors: empty, huge, negative
and overflowing numbers, unknown enum values, 0-length and 10 kB strings, control characters
and odd unicode in ids, missing fields, out-of-range timestamps, oversized messages, and now
and then a real funded player so the deeper paths run too. Whatever comes in, the answer is
never INTERNAL or UNKNOWN; INVALID_ARGUMENT and OUT_OF_RANGE name the field; and the ledger
grows by exactly the operations that were answered with a recorded outcome (an OK, or a
business refusal with its transaction id), so a refused request wrote nothing.

Like the stateful model test, hypothesis runs in a worker thread and each call is scheduled
on the session event loop where the client's channel lives.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wallet.v1 import wallet_service_pb2 as pb

from tests.helpers import Client, error_info, future, key
from tests.wallet.integration.test_rpc_errors import SCOPE_FOR
from wallet_core.api import money_methods
from wallet_core.operations import SYSTEM_CALLER

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
EXAMPLES = 300
# Codes a caller may get for a request it got wrong or that the business refuses; never
# INTERNAL or UNKNOWN.
ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
           grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
           grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED,
           grpc.StatusCode.RESOURCE_EXHAUSTED}

ODD_TEXT = st.one_of(
    st.just(""), st.just(" "), st.just("x" * 10_000), st.just("k" * 70_000),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=31), min_size=1, max_size=8),
    st.text(max_size=40),  # any unicode, surrogates excluded by hypothesis
    st.sampled_from(["\u202e\u0000evil", "p\u200bid", "😀" * 50, "USD", "usd", "XXX", "BTC",
                     "slots", "r1", "stripe", "-1", "9" * 30, "0", "1"]),
)


def _plausible(field: FieldDescriptor, players: list[str]) -> st.SearchStrategy[Any] | None:
    """A value a real caller would send, so that whole requests are often valid and the
    deeper paths (rules, journal, refusals) are fuzzed too."""
    name = field.name
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return st.builds(future) if field.message_type.name == "Timestamp" else None
    by_name: dict[str, st.SearchStrategy[Any]] = {
        "player_id": st.sampled_from(players), "currency": st.just("USD"),
        "game_id": st.just("slots"), "round_id": st.sampled_from(["r1", "r2"]),
        "psp": st.just("stripe"), "reason": st.just("fuzz"), "caller": st.just(""),
        "page_token": st.just(""), "page_size": st.integers(1, 20),
        "bucket": st.integers(1, 3), "wagering_requirement": st.integers(0, 10_00),
        "psp_reference": st.builds(lambda: key("pi")),
    }
    if name in by_name:
        return by_name[name]
    if name.endswith("idempotency_key"):
        return st.builds(lambda: key("fz"))
    if name.endswith("_id"):
        return st.integers(1, 500).map(str)
    if field.type == FieldDescriptor.TYPE_INT64:
        return st.integers(1, 5_00)
    return None


def _value(field: FieldDescriptor, players: list[str], depth: int) -> st.SearchStrategy[Any]:
    plausible = _plausible(field, players)
    if plausible is None:
        return _odd(field, players, depth)
    return st.integers(0, 9).flatmap(
        lambda roll: plausible if roll < 8 else _odd(field, players, depth))


def _odd(field: FieldDescriptor, players: list[str], depth: int) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        if field.name == "player_id":
            return st.one_of(st.sampled_from(players), ODD_TEXT)
        if field.name.endswith("idempotency_key"):
            return st.one_of(st.builds(lambda: key("fz")), ODD_TEXT)
        return ODD_TEXT
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
             FieldDescriptor.TYPE_SFIXED64):
        return st.one_of(st.integers(*INT64), st.sampled_from([0, 1, -1, 100, *INT64]))
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return st.integers(*INT32)
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_MESSAGE and depth < 2:
        return _message(field.message_type, players, depth + 1)
    return st.nothing()


def _message(descriptor: Any, players: list[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """A message of this type with each field set or left out, oneofs included."""
    cls = _class_of(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        msg = cls()
        for field in descriptor.fields:
            if draw(st.integers(0, 7)) == 0:
                continue  # missing one time in eight
            strategy = _value(field, players, depth)
            if field.is_repeated:
                items = draw(st.lists(strategy, max_size=3))
                container = getattr(msg, field.name)
                for item in items:
                    if field.type == FieldDescriptor.TYPE_MESSAGE:
                        container.add().CopyFrom(item)
                    else:
                        container.append(item)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, field.name).CopyFrom(draw(strategy))
            else:
                setattr(msg, field.name, draw(strategy))
        return msg
    return build()


def _class_of(descriptor: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)


METHODS = sorted(SCOPE_FOR)
JOURNAL_OF_CALLERS = "SELECT count(*) FROM wallet.journal WHERE caller <> $1"
SERVICE = pb.DESCRIPTOR.services_by_name["WalletService"]
RECORDING = set(money_methods.BY_NAME)  # methods whose answers are journal rows


def _requests(players: list[str]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.sampled_from(METHODS).flatmap(
        lambda m: st.tuples(st.just(m), _message(SERVICE.methods_by_name[m].input_type,
                                                 players)))


@pytest.mark.slow
async def test_any_request_gets_a_clear_answer_and_refusals_write_nothing(
        client: Client, db: asyncpg.Connection, player: str, ledger_clean: None) -> None:
    """300 fuzzed requests over every method: never INTERNAL/UNKNOWN, field-level errors name
    their field, and the journal grows by exactly the answers that recorded an outcome."""
    await client.funded(player, 1_000_00)
    loop = asyncio.get_running_loop()
    # The bonus sweeper (caller "system") may expire any test's bonus meanwhile: its rows
    # are not the fuzzer's answers.
    journal_before = await db.fetchval(JOURNAL_OF_CALLERS, SYSTEM_CALLER)
    recorded: list[str] = []
    seen: dict[grpc.StatusCode, int] = {}

    def call(method: str, request: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(
            client.call(method, request, SCOPE_FOR[method]), loop)
        try:
            reply = future.result(timeout=30)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            seen[code] = seen.get(code, 0) + 1
            assert code in ANSWERS, (method, code, err.details(), request)
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
                field = error_info(err).metadata["field"]
                assert field and field.split(".")[-1].split("[")[0] in (err.details() or ""), (
                    method, field, err.details())
            elif code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                info = error_info(err)
                # A business refusal (FAILED_PRECONDITION) is recorded, once. A reused key
                # (ALREADY_EXISTS) names the transaction that holds it but records nothing:
                # the fuzzer reuses plain strings such as "XXX" as keys of other requests.
                if (code == grpc.StatusCode.FAILED_PRECONDITION
                        and "transaction_id" in info.metadata
                        and info.metadata.get("replay") != "true"):
                    recorded.append(method)
            return
        seen[grpc.StatusCode.OK] = seen.get(grpc.StatusCode.OK, 0) + 1
        if method in RECORDING:
            result = getattr(reply, "result", None)
            if result is None or not result.replay:
                recorded.append(method)
        elif method == "ExecuteBatch":
            recorded.extend("batch" for r in reply.results
                            if r.WhichOneof("outcome") != "error"
                            and not getattr(r, r.WhichOneof("outcome")).result.replay)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_requests([player, f"{player}-nowallet"]))
    def fuzz(example: tuple[str, Any]) -> None:
        call(*example)

    await asyncio.to_thread(fuzz)
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 20, seen
    assert seen.get(grpc.StatusCode.OK, 0) > 10, seen
    journal_after = await db.fetchval(JOURNAL_OF_CALLERS, SYSTEM_CALLER)
    assert journal_after - journal_before == len(recorded), (seen, recorded)
