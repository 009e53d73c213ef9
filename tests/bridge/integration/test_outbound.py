"""The PSP adapters' outbound client and the PSP simulator, against each other on loopback.

The simulator runs in-process (`simulator.running`, port 0); a tiny aiohttp receiver in the
test plays the bridge's webhook endpoint and verifies every delivery with the adapters'
`read_webhook`, so simulator signing and adapter verification are checked against each
other. No Postgres, no Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway_bridge.psp.adyen import AdyenAdapter
from gateway_bridge.psp.base import (
    DepositOrder,
    PaymentRef,
    PayoutOrder,
    PspConfig,
    PspDeclined,
    PspUnavailable,
    WebhookRejected,
)
from gateway_bridge.psp.nowpayments import NowPaymentsAdapter
from gateway_bridge.psp.outbound import RESPONSE_SIZE_MAX_BYTES, OutboundClient
from gateway_bridge.psp.stripe import StripeAdapter
from gateway_bridge.shared.events import EventKind, PspEvent
from psp_simulator import SimSettings, config, running

STRIPE_KEY = "sk_test_simulator_0123456789abcdef"
SECRETS = {
    "stripe_api_key": STRIPE_KEY,
    "stripe_webhook_secret": "whsec_simulator_secret",
    "adyen_api_key": "AQE_simulator_adyen_key",
    "adyen_hmac_key": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
    "adyen_merchant_account": "GamingMerchantECOM",
    "nowpayments_api_key": "NP-SIM-KEY-0123",
    "nowpayments_ipn_secret": "np-ipn-secret",
}
ADAPTERS: dict[str, Any] = {"stripe": StripeAdapter, "adyen": AdyenAdapter,
                            "nowpayments": NowPaymentsAdapter}


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class Receiver:
    """The bridge's webhook endpoint, reduced to verify-and-record."""

    def __init__(self) -> None:
        self.adapters = {name: cls(psp_config(name, "http://127.0.0.1:9"))
                         for name, cls in ADAPTERS.items()}
        self.events: list[PspEvent] = []
        self.rejections: list[str] = []
        self.fail_next = 0

    async def handle(self, request: web.Request) -> web.Response:
        adapter = self.adapters[request.match_info["psp"]]
        body = await request.read()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="try later")
        try:
            self.events.extend(adapter.read_webhook(request.headers, body,
                                                    now_s=int(time.time())))
        except WebhookRejected as exc:
            self.rejections.append(exc.cause)
            return web.Response(status=400, text=exc.cause)
        ack = adapter.ack
        return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type)


def psp_config(name: str, base_url: str, **changes: Any) -> PspConfig:
    """The bridge's PspConfig for one PSP, sharing the simulator's secrets."""
    base = {
        "stripe": PspConfig(name="stripe", base_url=base_url, api_key=SECRETS["stripe_api_key"],
                            webhook_secret=SECRETS["stripe_webhook_secret"]),
        "adyen": PspConfig(name="adyen", base_url=base_url, api_key=SECRETS["adyen_api_key"],
                           webhook_secret=SECRETS["adyen_hmac_key"],
                           merchant_account=SECRETS["adyen_merchant_account"]),
        "nowpayments": PspConfig(name="nowpayments", base_url=base_url,
                                 api_key=SECRETS["nowpayments_api_key"],
                                 webhook_secret=SECRETS["nowpayments_ipn_secret"]),
    }[name]
    defaults = {"timeout_ms": 2000, "retries_max": 2, "retry_backoff_ms": 10,
                "breaker_failures_max": 5, "breaker_cooldown_ms": 1000}
    return replace(base, **{**defaults, **changes})


class Harness:
    def __init__(self, sim_port: int, receiver: Receiver, receiver_url: str,
                 session: aiohttp.ClientSession) -> None:
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        self.receiver = receiver
        self.receiver_url = receiver_url
        self.session = session
        self._adapters: list[Any] = []

    def adapter(self, name: str, *, clock: Callable[[], float] = time.monotonic,
                **changes: Any) -> Any:
        if name == "nowpayments":
            changes.setdefault("callback_url", f"{self.receiver_url}/webhooks/nowpayments")
        adapter = ADAPTERS[name](psp_config(name, f"{self.sim_url}/{name}", **changes),
                                 clock=clock)
        self._adapters.append(adapter)
        return adapter

    async def close_adapters(self) -> None:
        for adapter in self._adapters:
            await adapter.close()
        self._adapters.clear()

    async def control(self, method: str, path: str, body: object = None,
                      expect: int = 200) -> Any:
        async with self.session.request(method, self.sim_url + path, json=body) as resp:
            data = await resp.json()
            assert resp.status == expect, (resp.status, data)
            return data

    async def knobs(self, **values: Any) -> None:
        await self.control("POST", "/_sim/knobs", values)

    async def flush(self) -> None:
        assert (await self.control("POST", "/_sim/flush"))["flushed"]

    async def requests(self, path_part: str) -> list[dict[str, Any]]:
        rows = (await self.control("GET", "/_sim/requests?limit=1000"))["requests"]
        return [row for row in rows if path_part in row["path"]]

    async def object_count(self) -> int:
        count: int = (await self.control("GET", "/_sim/objects"))["count"]
        return count


@pytest.fixture(scope="module")
async def harness() -> AsyncIterator[Harness]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/webhooks/{psp}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    settings = SimSettings(**SECRETS, listen_addr="127.0.0.1:0", webhook_base_url=receiver_url,
                           webhook_retry_backoff_ms=20, flush_timeout_ms=10_000, seed=7)
    try:
        async with running(settings) as port, aiohttp.ClientSession() as session:
            yield Harness(port, receiver, receiver_url, session)
    finally:
        await runner.cleanup()


@pytest.fixture
async def h(harness: Harness) -> AsyncIterator[Harness]:
    """Each test starts from start-up knobs, an empty simulator and an empty receiver."""
    await harness.control("POST", "/_sim/reset")
    harness.receiver.events.clear()
    harness.receiver.rejections.clear()
    harness.receiver.fail_next = 0
    yield harness
    await harness.close_adapters()


_orders = iter(range(1, 1_000_000))


def deposit(currency: str = "EUR", amount_minor: int = 2500, **extra: Any) -> DepositOrder:
    return DepositOrder(payment_id=f"pay-{next(_orders)}", player_id="player-1",
                        amount_minor=amount_minor, currency=currency, method="card", **extra)


def payout(currency: str = "EUR", amount_minor: int = 1200, destination: str = "ba_1",
           method: str = "bank") -> PayoutOrder:
    return PayoutOrder(payment_id=f"wd-{next(_orders)}", player_id="player-1",
                       amount_minor=amount_minor, currency=currency, method=method,
                       destination=destination)


CRYPTO_AMOUNT_MINOR = 5000


def crypto_deposit() -> DepositOrder:
    return deposit(currency="USD", amount_minor=CRYPTO_AMOUNT_MINOR, pay_currency="btc")


def deposit_for(psp: str) -> DepositOrder:
    return crypto_deposit() if psp == "nowpayments" else deposit()


def payout_for(psp: str) -> PayoutOrder:
    if psp == "nowpayments":
        return payout(currency="USDT", amount_minor=12_500_000, destination="TXsimAddress",
                      method="usdttrc20")
    return payout()


# --- outbound client: retries, breaker, declines, idempotency, timeouts ----------------------

async def test_retries_until_the_psp_comes_back(h: Harness) -> None:
    """While the PSP is down the call retries with backoff; it succeeds once it's back, and
    every attempt carried the same idempotency key."""
    stripe = h.adapter("stripe", retries_max=6, retry_backoff_ms=60)
    await h.knobs(down=True)
    call = asyncio.create_task(stripe.create_deposit(deposit()))
    await asyncio.sleep(0.25)
    await h.knobs(down=False)
    instructions = await call
    attempts = await h.requests("/checkout/sessions")
    assert [row["status"] for row in attempts][-1] == 200
    assert len(attempts) >= 2 and {row["status"] for row in attempts[:-1]} == {503}
    assert len({row["idempotency_key"] for row in attempts}) == 1
    assert instructions.psp_reference.startswith("cs_test_") and await h.object_count() == 1


async def test_retries_through_random_500s(h: Harness) -> None:
    """With half the calls failing, bounded retries still get every deposit through."""
    adyen = h.adapter("adyen", retries_max=9, retry_backoff_ms=1)
    await h.knobs(error_rate=0.5)
    links = [await adyen.create_deposit(deposit()) for _ in range(5)]
    attempts = await h.requests("/paymentLinks")
    assert len({link.psp_reference for link in links}) == 5 and await h.object_count() == 5
    assert 500 in {row["status"] for row in attempts}


async def test_breaker_opens_refuses_then_half_opens_and_closes(h: Harness) -> None:
    """N consecutive failed calls open the breaker; open refuses without calling; after the
    cooldown one trial goes through and its success closes the breaker."""
    clock = FakeClock()
    stripe = h.adapter("stripe", clock=clock, retries_max=0, breaker_failures_max=3,
                       breaker_cooldown_ms=5000)
    await h.knobs(down=True)
    for _ in range(3):
        with pytest.raises(PspUnavailable) as info:
            await stripe.create_payout(payout())
        assert not info.value.breaker_open
    assert stripe.client.state == "open" and not stripe.available
    with pytest.raises(PspUnavailable) as info:
        await stripe.create_payout(payout())
    assert info.value.breaker_open
    assert len(await h.requests("/v1/payouts")) == 3  # the refused call never left
    clock.now_s += 4.9
    assert stripe.client.state == "open"
    clock.now_s += 0.2
    assert stripe.client.state == "half_open" and stripe.available
    await h.knobs(down=False)
    assert (await stripe.create_payout(payout())).startswith("po_")
    assert stripe.client.state == "closed"


async def test_half_open_failed_trial_reopens_and_only_one_trial_runs(h: Harness) -> None:
    """In half-open exactly one call is let through; if it fails the breaker opens again."""
    clock = FakeClock()
    adapter = h.adapter("nowpayments", clock=clock, retries_max=0, breaker_failures_max=1,
                        breaker_cooldown_ms=1000, timeout_ms=3000)
    await h.knobs(down=True)
    with pytest.raises(PspUnavailable):
        await adapter.create_deposit(crypto_deposit())
    clock.now_s += 1.0
    assert adapter.client.state == "half_open"
    await h.knobs(latency_ms=300)
    trial = asyncio.create_task(adapter.create_deposit(crypto_deposit()))
    await asyncio.sleep(0.05)
    with pytest.raises(PspUnavailable) as info:
        await adapter.create_deposit(crypto_deposit())
    assert info.value.breaker_open  # the second caller didn't get a trial of its own
    with pytest.raises(PspUnavailable) as info:
        await trial
    assert not info.value.breaker_open
    assert adapter.client.state == "open"
    assert len(await h.requests("/v1/payment")) == 2


@pytest.mark.parametrize("psp", ["stripe", "adyen", "nowpayments"])
async def test_wrong_credentials_are_not_a_decline_and_never_echo_the_key(h: Harness,
                                                                            psp: str) -> None:
    """A wrong API key (401) says nothing about the payment: one attempt, PspUnavailable
    (outcome unknown, so no reserve is released on it), no key in the text."""
    adapter = h.adapter(psp, api_key="sk_test_wrong_key_0000000000", retries_max=3)
    with pytest.raises(PspUnavailable) as info:
        await adapter.create_deposit(deposit_for(psp))
    assert "401" in info.value.message
    assert "sk_test_wrong_key" not in str(info.value)
    assert len(await h.requests(f"/{psp}/")) == 1


@pytest.mark.parametrize(("psp", "status", "code"), [
    ("stripe", 400, "balance_insufficient"), ("adyen", 200, "Refused"),
    ("nowpayments", 400, "BAD_CREATE_WITHDRAWAL_REQUEST")])
async def test_payout_declines(h: Harness, psp: str, status: int, code: str) -> None:
    """decline_rate=1 refuses payouts the way each PSP does; the adapter raises PspDeclined."""
    adapter = h.adapter(psp, retries_max=3)
    await h.knobs(decline_rate=1.0)
    with pytest.raises(PspDeclined) as info:
        await adapter.create_payout(payout_for(psp))
    assert (info.value.status, info.value.code) == (status, code)
    assert len(await h.requests(f"/{psp}/")) == 1


async def test_timeout_and_same_key_on_every_retry(h: Harness) -> None:
    """Answers slower than timeout_ms time out per attempt; each retry carries the same key
    and the PSP made one object, which the next call with that key gets back."""
    stripe = h.adapter("stripe", timeout_ms=150, retries_max=2, retry_backoff_ms=10)
    await h.knobs(latency_ms=3000)  # one attempt that waited for it would take 3 s
    order = deposit()
    started = time.monotonic()
    with pytest.raises(PspUnavailable, match="no answer within 150 ms"):
        await stripe.create_deposit(order)
    elapsed_s = time.monotonic() - started
    assert 0.45 <= elapsed_s < 2.5, elapsed_s
    attempts = await h.requests("/checkout/sessions")
    assert len(attempts) == 3
    assert {row["idempotency_key"] for row in attempts} == {f"deposit-{order.payment_id}"}
    assert await h.object_count() == 1
    await h.knobs(latency_ms=0)
    again = await stripe.create_deposit(order)
    objects = (await h.control("GET", "/_sim/objects"))["objects"]
    assert [o["psp_reference"] for o in objects] == [again.psp_reference]


async def test_same_key_with_a_different_body_is_not_taken_for_a_decline(h: Harness) -> None:
    """Idempotency-Key reuse with other parameters gets Stripe's idempotency error, which the
    client reports as an unknown outcome, never as a refused payment."""
    stripe = h.adapter("stripe")
    form = "content-type", "application/x-www-form-urlencoded"
    await stripe.client.request("POST", "/v1/payouts", body=b"amount=100&currency=eur",
                                content_type=form[1], idempotency_key="k-1")
    with pytest.raises(PspUnavailable) as info:
        await stripe.client.request("POST", "/v1/payouts", body=b"amount=200&currency=eur",
                                    content_type=form[1], idempotency_key="k-1")
    assert "HTTP 400" in info.value.message
    assert await h.object_count() == 1


async def test_adapter_create_is_idempotent(h: Harness) -> None:
    """Creating the same deposit twice (a bridge retry after a crash) makes one object."""
    for psp in ADAPTERS:
        adapter = h.adapter(psp)
        order = deposit_for(psp)
        first, second = await adapter.create_deposit(order), await adapter.create_deposit(order)
        assert first == second
    assert await h.object_count() == 3


class OddServer:
    """A misbehaving PSP for what the simulator doesn't do: 429 then OK, and huge answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def rate_limited(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls == 1:
            return web.Response(status=429, headers={"Retry-After": "0"})
        return web.json_response({"id": "obj_1"})

    async def huge(self, request: web.Request) -> web.Response:
        self.calls += 1
        return web.Response(body=b"x" * (RESPONSE_SIZE_MAX_BYTES + 1))


async def test_429_is_retried_and_oversized_answers_are_refused() -> None:
    """429 is retried like a 5xx; a body over the size bound fails without a retry."""
    odd = OddServer()
    app = web.Application()
    app.router.add_get("/limited", odd.rate_limited)
    app.router.add_get("/huge", odd.huge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = OutboundClient(psp_config("stripe", f"http://127.0.0.1:{runner.addresses[0][1]}",
                                       retries_max=3), auth_headers={})
    try:
        assert (await client.request("GET", "/limited")).status == 200
        assert odd.calls == 2
        odd.calls = 0
        with pytest.raises(PspUnavailable, match="larger than"):
            await client.request("GET", "/huge")
        assert odd.calls == 1
    finally:
        await client.close()
        await runner.cleanup()


def test_config_is_validated_when_the_client_is_built() -> None:
    """Bad limits fail at construction, all named at once."""
    with pytest.raises(ValueError, match="timeout_ms=0.*retries_max=99"):
        OutboundClient(psp_config("stripe", "http://x", timeout_ms=0, retries_max=99),
                       auth_headers={})
    with pytest.raises(ValueError, match="hex"):
        AdyenAdapter(psp_config("adyen", "http://x", webhook_secret="not-hex"))


# --- simulator: signed webhooks the adapters accept ------------------------------------------

async def test_deposits_complete_with_signed_webhooks(h: Harness) -> None:
    """Each PSP's paid deposit reaches the receiver as webhooks its adapter verifies."""
    orders = {psp: deposit_for(psp) for psp in ADAPTERS}
    refs = {psp: (await h.adapter(psp).create_deposit(orders[psp])).psp_reference
            for psp in ADAPTERS}
    queued = {psp: await h.control("POST", f"/_sim/deposits/{psp}/{refs[psp]}/complete",
                                   {"outcome": "succeeded"}) for psp in ADAPTERS}
    await h.flush()
    assert h.receiver.rejections == []
    by_psp: dict[str, list[PspEvent]] = {}
    for event in h.receiver.events:
        by_psp.setdefault(event.psp, []).append(event)
    for psp, events in by_psp.items():
        assert [e.event_key for e in events] == [e["event_key"] for e in queued[psp]["events"]]
        assert all(e.payment_id == orders[psp].payment_id for e in events)
        final = events[-1]
        assert final.kind is EventKind.DEPOSIT_SUCCEEDED
        assert (final.amount_minor, final.currency) == (orders[psp].amount_minor,
                                                        orders[psp].currency)
    assert [e.kind for e in by_psp["nowpayments"]] == [EventKind.DEPOSIT_PENDING,
                                                       EventKind.DEPOSIT_SUCCEEDED]
    assert by_psp["adyen"][0].psp_reference == refs["adyen"]  # the link id, via paymentLinkId
    assert (by_psp["stripe"][0].psp_reference_alt or "").startswith("pi_")


@pytest.mark.parametrize(("psp", "outcome", "kinds"), [
    ("stripe", "failed", [EventKind.DEPOSIT_PENDING, EventKind.DEPOSIT_FAILED]),
    ("stripe", "expired", [EventKind.DEPOSIT_EXPIRED]),
    ("adyen", "failed", [EventKind.DEPOSIT_FAILED]),
    ("adyen", "expired", []),  # Adyen sends nothing for an expired link: polling finds it
    ("nowpayments", "failed", [EventKind.DEPOSIT_FAILED]),
    ("nowpayments", "expired", [EventKind.DEPOSIT_EXPIRED]),
])
async def test_deposit_failure_outcomes(h: Harness, psp: str, outcome: str,
                                        kinds: list[EventKind]) -> None:
    """Failed and expired deposits send what each PSP sends for them."""
    ref = (await h.adapter(psp).create_deposit(deposit_for(psp))).psp_reference
    await h.control("POST", f"/_sim/deposits/{psp}/{ref}/complete", {"outcome": outcome})
    await h.flush()
    assert [e.kind for e in h.receiver.events] == kinds


async def test_partial_crypto_payment_and_amount_override(h: Harness) -> None:
    """partial: received_minor from paid_fraction; an amount override shows in the event."""
    adapter = h.adapter("nowpayments")
    ref = (await adapter.create_deposit(crypto_deposit())).psp_reference
    await h.control("POST", f"/_sim/deposits/nowpayments/{ref}/complete",
                    {"outcome": "partial", "paid_fraction": "0.25"})
    ref2 = (await adapter.create_deposit(crypto_deposit())).psp_reference
    await h.control("POST", f"/_sim/deposits/nowpayments/{ref2}/complete",
                    {"outcome": "succeeded", "amount_minor": 4000, "currency": "EUR"})
    await h.flush()
    partial, *rest = h.receiver.events
    assert (partial.kind, partial.amount_minor, partial.received_minor) == (
        EventKind.DEPOSIT_PARTIAL, 5000, 1250)
    assert {(e.amount_minor, e.currency) for e in rest} == {(4000, "EUR")}
    card = (await h.adapter("stripe").create_deposit(deposit())).psp_reference
    refused = await h.control("POST", f"/_sim/deposits/stripe/{card}/complete",
                              {"outcome": "partial"}, expect=400)
    assert "partial" in refused["error"]


@pytest.mark.parametrize(("psp", "kinds"), [
    ("stripe", [EventKind.PAYOUT_PAID, EventKind.PAYOUT_FAILED]),
    ("adyen", [EventKind.PAYOUT_PAID, EventKind.PAYOUT_REVERSED]),
    ("nowpayments", [EventKind.PAYOUT_PAID, EventKind.PAYOUT_FAILED]),
])
async def test_payout_paid_then_reversed(h: Harness, psp: str, kinds: list[EventKind]) -> None:
    """A reversal is paid-then-failed (Stripe, NOWPayments) or PAID_OUT_REVERSED (Adyen),
    always about the payout we created and echoing our payment id."""
    order = payout_for(psp)
    ref = await h.adapter(psp).create_payout(order)
    await h.control("POST", f"/_sim/payouts/{psp}/{ref}/complete", {"outcome": "reversed"})
    await h.flush()
    settled = [e for e in h.receiver.events if e.kind is not EventKind.PAYOUT_PENDING]
    assert [e.kind for e in settled] == kinds
    assert {(e.psp_reference, e.payment_id) for e in settled} == {(ref, order.payment_id)}
    assert {(e.amount_minor, e.currency) for e in settled} == {(order.amount_minor,
                                                                 order.currency)}


@pytest.mark.parametrize("psp", ["stripe", "adyen"])
async def test_chargeback_names_the_payment_and_the_dispute(h: Harness, psp: str) -> None:
    """A chargeback points at the payment id learned at completion (psp_reference_alt)."""
    ref = (await h.adapter(psp).create_deposit(deposit())).psp_reference
    await h.control("POST", f"/_sim/deposits/{psp}/{ref}/chargeback", expect=409)
    await h.control("POST", f"/_sim/deposits/{psp}/{ref}/complete", {"outcome": "succeeded"})
    await h.control("POST", f"/_sim/deposits/{psp}/{ref}/chargeback", {"amount_minor": 700})
    await h.flush()
    paid, chargeback = h.receiver.events
    assert chargeback.kind is EventKind.CHARGEBACK
    assert chargeback.psp_reference == paid.psp_reference_alt
    assert chargeback.dispute_reference and chargeback.amount_minor == 700


async def test_duplicates_and_reordering(h: Harness) -> None:
    """duplicate_count=2 sends every webhook three times; reorder sends finished first."""
    await h.knobs(duplicate_count=2, reorder=True)
    ref = (await h.adapter("nowpayments").create_deposit(crypto_deposit())).psp_reference
    answer = await h.control("POST", f"/_sim/deposits/nowpayments/{ref}/complete")
    assert answer["deliveries"] == 6
    await h.flush()
    statuses = [e.psp_event_type for e in h.receiver.events]
    assert statuses == ["finished", "confirming"] * 3
    assert len({e.event_key for e in h.receiver.events}) == 2


async def test_failed_deliveries_are_retried_and_logged(h: Harness) -> None:
    """A receiver answering 500 gets the webhook again, with backoff, until it says 2xx."""
    h.receiver.fail_next = 2
    ref = (await h.adapter("stripe").create_deposit(deposit())).psp_reference
    await h.control("POST", f"/_sim/deposits/stripe/{ref}/complete")
    await h.flush()
    log = (await h.control("GET", "/_sim/deliveries?psp=stripe"))["deliveries"]
    assert [(row["attempt"], row["status"]) for row in log] == [(1, 500), (2, 500), (3, 200)]
    assert len(h.receiver.events) == 1


async def test_dropped_and_delayed_webhooks(h: Harness) -> None:
    """drop_rate=1 delivers nothing (logged as dropped); delay_ms holds delivery back."""
    adapter = h.adapter("adyen")
    await h.knobs(drop_rate=1.0)
    ref = (await adapter.create_deposit(deposit())).psp_reference
    answer = await h.control("POST", f"/_sim/deposits/adyen/{ref}/complete")
    await h.flush()
    assert answer["dropped"] == 1 and h.receiver.events == []
    await h.knobs(drop_rate=0.0, delay_ms=300)
    ref = (await adapter.create_deposit(deposit())).psp_reference
    started = time.monotonic()  # before the delay starts, so the bound below is a floor
    await h.control("POST", f"/_sim/deposits/adyen/{ref}/complete")
    await asyncio.sleep(0.1)
    assert h.receiver.events == []
    await h.flush()
    assert time.monotonic() - started >= 0.25 and len(h.receiver.events) == 1


async def test_auto_completion(h: Harness) -> None:
    """auto_complete_ms completes deposits and payouts on their own with auto_outcome."""
    await h.knobs(auto_complete_ms=50)
    stripe = h.adapter("stripe")
    await stripe.create_deposit(deposit())
    await stripe.create_payout(payout())
    deadline = time.monotonic() + 5
    while len(h.receiver.events) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert sorted(e.kind for e in h.receiver.events) == sorted(
        [EventKind.DEPOSIT_SUCCEEDED, EventKind.PAYOUT_PAID])


async def test_fetch_status(h: Harness) -> None:
    """Status polls: None while pending, a poll-keyed final event after; Adyen payouts have
    no status API; poll_status overrides what the simulator answers."""
    stripe, adyen, now = h.adapter("stripe"), h.adapter("adyen"), h.adapter("nowpayments")
    order = deposit()
    ref = (await stripe.create_deposit(order)).psp_reference
    pay_ref = PaymentRef(payment_id=order.payment_id, direction="deposit", psp_reference=ref,
                         amount_minor=order.amount_minor, currency=order.currency)
    assert await stripe.fetch_status(pay_ref) is None
    await h.control("POST", f"/_sim/deposits/stripe/{ref}/complete")
    polled = await stripe.fetch_status(pay_ref)
    assert polled is not None and (polled.kind, polled.event_key, polled.payment_id) == (
        EventKind.DEPOSIT_SUCCEEDED, f"poll:{ref}:complete", order.payment_id)

    link = (await adyen.create_deposit(order)).psp_reference
    await h.control("POST", f"/_sim/deposits/adyen/{link}/complete", {"outcome": "expired"})
    expired = await adyen.fetch_status(replace(pay_ref, psp_reference=link))
    assert expired is not None and expired.kind is EventKind.DEPOSIT_EXPIRED
    payout_ref = await adyen.create_payout(payout())
    assert await adyen.fetch_status(replace(pay_ref, direction="withdrawal",
                                            psp_reference=payout_ref)) is None

    wd = payout_for("nowpayments")
    wd_ref = await now.create_payout(wd)
    wd_pay_ref = PaymentRef(payment_id=wd.payment_id, direction="withdrawal",
                            psp_reference=wd_ref, amount_minor=wd.amount_minor,
                            currency=wd.currency)
    assert await now.fetch_status(wd_pay_ref) is None
    await h.knobs(poll_status="FINISHED")
    paid = await now.fetch_status(wd_pay_ref)
    assert paid is not None and (paid.kind, paid.event_key, paid.amount_minor) == (
        EventKind.PAYOUT_PAID, f"poll:{wd_ref}:finished", wd.amount_minor)
    np_ref = (await now.create_deposit(crypto_deposit())).psp_reference
    await h.knobs(poll_status="confirming")
    assert await now.fetch_status(replace(pay_ref, psp_reference=np_ref)) is None
    await h.knobs(poll_status="finished")
    finished = await now.fetch_status(replace(pay_ref, psp_reference=np_ref))
    assert finished is not None and (finished.kind, finished.amount_minor) == (
        EventKind.DEPOSIT_SUCCEEDED, CRYPTO_AMOUNT_MINOR)


async def test_nowpayments_deposit_instructions(h: Harness) -> None:
    """The player gets an address and the crypto amount as an exact decimal string."""
    instructions = await h.adapter("nowpayments").create_deposit(crypto_deposit())
    assert instructions.pay_currency == "btc" and instructions.pay_address
    assert instructions.pay_amount == "0.00076924"  # 50 USD at 65,000 USD/BTC, rounded up


async def test_knobs_are_validated_and_reset(h: Harness) -> None:
    """Bad knob values are refused with every problem named; reset restores start values."""
    error = await h.control("POST", "/_sim/knobs", {"error_rate": 2, "bogus": 1}, expect=400)
    assert "error_rate" in error["error"] and "bogus" in error["error"]
    await h.knobs(latency_ms=5, reorder=True)
    assert (await h.control("GET", "/_sim/knobs"))["reorder"] is True
    knobs = await h.control("POST", "/_sim/reset")
    assert (knobs["latency_ms"], knobs["reorder"]) == (0, False)


def test_settings_load_from_the_bridge_environment() -> None:
    """The simulator reads the bridge's secret names and SIM_* knobs; secrets are required."""
    secrets = {"BRIDGE_STRIPE_API_KEY": "secret-1", "BRIDGE_STRIPE_WEBHOOK_SECRET": "secret-2",
               "BRIDGE_ADYEN_API_KEY": "secret-3", "BRIDGE_ADYEN_HMAC_KEY": "00ff",
               "BRIDGE_NOWPAYMENTS_API_KEY": "secret-4",
               "BRIDGE_NOWPAYMENTS_IPN_SECRET": "secret-5"}
    env = {**secrets, "BRIDGE_ADYEN_MERCHANT_ACCOUNT": "M", "SIM_LATENCY_MS": "20",
           "SIM_ERROR_RATE": "0.1", "SIM_REORDER": "true"}
    settings = config.load(env)
    assert (settings.listen_addr, settings.webhook_base_url) == ("127.0.0.1:8090",
                                                                 "http://127.0.0.1:8080")
    assert (settings.knobs.latency_ms, settings.knobs.error_rate, settings.knobs.reorder) == (
        20, 0.1, True)
    assert not any(value in repr(settings) for value in secrets.values())
    with pytest.raises(config.SettingsError) as info:
        config.load({**env, "BRIDGE_ADYEN_HMAC_KEY": "", "SIM_ERROR_RATE": "7"})
    assert any("BRIDGE_ADYEN_HMAC_KEY" in p for p in info.value.problems)
    assert any("SIM_ERROR_RATE" in p for p in info.value.problems)


async def test_same_key_still_in_flight_is_an_unknown_outcome_not_a_decline(h: Harness) -> None:
    """Two payout requests with one key overlap (a slow PSP, a retry racing the first call):
    the PSP's 409 'in progress' must never read as a refusal that would release the reserve."""
    adapter = h.adapter("stripe", retries_max=0, timeout_ms=2000)
    await h.knobs(latency_ms=300)
    order = payout_for("stripe")
    outcomes = await asyncio.gather(adapter.create_payout(order), adapter.create_payout(order),
                                    return_exceptions=True)
    assert not any(isinstance(o, PspDeclined) for o in outcomes), outcomes
    assert any(isinstance(o, str) for o in outcomes), outcomes
    assert await h.object_count() == 1
