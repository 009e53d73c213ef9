"""Request limits of the wallet: the per-caller rate limit (token buckets) and the cap on
calls in flight, each answered RESOURCE_EXHAUSTED without doing anything.

The message-size limit is proven in tests/wallet/integration/test_rpc_errors.py
(test_oversized_request_is_resource_exhausted).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.helpers import CALLERS_JSON, Client, error_info, key, until_blocked_by
from wallet_core import config
from wallet_core.api.rate_limit import RATE_LIMITED, RateLimiter
from wallet_core.server import Running, running


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_bucket_allows_the_burst_then_refuses_with_the_time_to_the_next_token() -> None:
    """Burst calls pass at once, the next waits 1/rate; tokens come back with time."""
    clock = FakeClock()
    limiter = RateLimiter(rate_rps=10, burst=3, callers=["game"], clock=clock)
    assert [limiter.retry_after_ms("game") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after_ms("game") == 100
    clock.now_s += 0.05
    assert limiter.retry_after_ms("game") == 50
    clock.now_s += 0.05
    assert limiter.retry_after_ms("game") == 0
    clock.now_s += 3600  # a long pause refills to the burst, never beyond it
    assert [limiter.retry_after_ms("game") for _ in range(4)] == [0, 0, 0, 100]


def test_buckets_are_per_caller_and_bounded_by_the_configured_callers() -> None:
    """One caller's exhaustion leaves the others alone; names outside the configured set
    never get a bucket (the count stays the number of callers)."""
    limiter = RateLimiter(rate_rps=1, burst=1, callers=["game", "payments"], clock=FakeClock())
    assert limiter.retry_after_ms("game") == 0
    assert limiter.retry_after_ms("game") > 0
    assert limiter.retry_after_ms("payments") == 0
    for i in range(1000):
        limiter.retry_after_ms(f"stranger-{i}")
    assert len(limiter._buckets) == 2


def test_rate_zero_is_off_and_burst_zero_is_one_second_of_calls() -> None:
    """rate 0 never refuses and keeps no buckets; burst 0 defaults to the rate."""
    off = RateLimiter(rate_rps=0, burst=0, callers=["game"], clock=FakeClock())
    assert not off.enabled and all(off.retry_after_ms("game") == 0 for _ in range(10_000))
    assert RateLimiter(rate_rps=50, burst=0, callers=["game"]).burst == 50


@pytest.mark.parametrize(("env", "problem"), [
    ({"WALLET_RATE_LIMIT_RPS": "-1"}, "WALLET_RATE_LIMIT_RPS: -1 is outside"),
    ({"WALLET_RATE_LIMIT_RPS": "ten"}, "WALLET_RATE_LIMIT_RPS: 'ten' is not an integer"),
    ({"WALLET_RATE_LIMIT_BURST": "100"}, "WALLET_RATE_LIMIT_BURST: has no effect"),
])
def test_rate_limit_settings_are_validated(env: dict[str, str], problem: str) -> None:
    """Bad rate-limit settings are refused at start-up, naming the variable."""
    with pytest.raises(config.SettingsError) as caught:
        config.load({"DATABASE_URL": "postgresql://127.0.0.1/unused",
                     "WALLET_CALLERS": CALLERS_JSON, **env})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_rate_limit_is_off_by_default() -> None:
    """Unset, the limit is off, so existing clients and benchmarks are never throttled."""
    s = config.load({"DATABASE_URL": "postgresql://127.0.0.1/unused",
                     "WALLET_CALLERS": CALLERS_JSON})
    assert s.rate_limit_rps == 0


@pytest.fixture
async def limited_wallet(
        custom_settings: Callable[..., config.Settings]) -> AsyncIterator[Client]:
    # Burst 2, then one call a second: the third of three calls sent together is refused.
    settings = custom_settings(listen_addr="127.0.0.1:0", rate_limit_rps=1, rate_limit_burst=2)
    async with running(settings) as run, \
            grpc.aio.insecure_channel(f"127.0.0.1:{run.port}") as channel:
        yield Client(channel)


async def test_over_the_rate_is_resource_exhausted_with_a_retry_hint_and_changes_nothing(
        limited_wallet: Client, client: Client, player: str) -> None:
    """The call over a caller's rate gets RESOURCE_EXHAUSTED, reason RATE_LIMITED and a
    RetryInfo; it recorded nothing, so the same key after the hint is the first execution;
    another caller is not limited meanwhile."""
    await client.open(player)  # through the unlimited server: the limited bucket stays full
    # Three deposits of the payments caller sent together, so no token comes back between
    # them (one a second): the burst of 2 passes and one, whichever comes last, is refused.
    amounts = {key("dep"): amount for amount in (100, 200, 400)}
    outcomes = dict(zip(amounts, await asyncio.gather(
        *(limited_wallet.deposit(player, amount, idem=k) for k, amount in amounts.items()),
        return_exceptions=True), strict=True))
    refused = {k: o for k, o in outcomes.items() if isinstance(o, BaseException)}
    assert len(refused) == 1, outcomes
    [(refused_key, err)] = refused.items()
    assert isinstance(err, grpc.aio.AioRpcError), err
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    info = error_info(err)
    assert info.reason == RATE_LIMITED and info.domain == "wallet.v1"
    retry_after_ms = int(info.metadata["retry_after_ms"])
    assert 0 < retry_after_ms <= 1000
    assert "rate limit" in (err.details() or "")
    assert _retry_delay_ms(err) == retry_after_ms
    # Nothing happened: the balance is the two deposits that passed only...
    passed_minor = sum(amounts.values()) - amounts[refused_key]
    assert (await client.balance(player)).cash == passed_minor
    # ...and other callers have their own bucket (read scope through the limited server).
    assert (await limited_wallet.balance(player)).cash == passed_minor
    await asyncio.sleep(retry_after_ms / 1000 + 0.05)
    retried = await limited_wallet.deposit(player, amounts[refused_key], idem=refused_key)
    assert not retried.result.replay, "the refused call must not have been recorded"
    assert retried.result.balances.cash == sum(amounts.values())


def _retry_delay_ms(err: grpc.aio.AioRpcError) -> int:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return int(retry.retry_delay.ToMilliseconds())
    raise AssertionError("no RetryInfo in the status details")


@pytest.fixture
async def one_call_wallet(
        custom_settings: Callable[..., config.Settings]) -> AsyncIterator[Running]:
    async with running(custom_settings(listen_addr="127.0.0.1:0",
                                       concurrent_rpcs_max=1)) as run:
        yield run


async def test_calls_past_the_concurrency_cap_are_resource_exhausted(
        one_call_wallet: Running, client: Client, db: asyncpg.Connection, player: str) -> None:
    """With WALLET_CONCURRENT_RPCS_MAX=1 and one call held in flight (a Bet waiting for the
    wallet row this test has locked), a second call is RESOURCE_EXHAUSTED and does nothing;
    once the first finishes, calls are served again."""
    await client.funded(player, 1000)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{one_call_wallet.port}") as channel:
        wallet = Client(channel)
        async with db.transaction():
            await db.execute("SELECT 1 FROM wallet.wallets WHERE player_id = $1 FOR UPDATE",
                             player)
            held = asyncio.create_task(wallet.bet(player, 100))
            await until_blocked_by(db, db.get_server_pid())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await wallet.bet(player, 200)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (
                caught.value.details())
        assert (await held).result.balances.cash == 900
        assert (await wallet.balance(player)).cash == 900  # the refused bet did nothing
