"""Payment webhooks through the gateway bridge, against the PSP simulator (FastHttpUser).

A cashier's view: each deposit is created through the bridge's REST API (`POST
/v1/deposits`, which creates it at the PSP simulator), then the simulator's control API is
told the payer finished (`POST /_sim/deposits/{psp}/{ref}/complete`), so the simulator sends
its correctly signed webhook to the bridge; the user then polls `GET /v1/payments/{id}` until
the payment reaches the state the outcome implies. The time from "complete" to that state is
reported as request type "flow", name "deposit settled" (webhook in, inbox, wallet call).

With BRIDGE_STRIPE_WEBHOOK_SECRET set, users also post hand-signed Stripe webhooks
(`gateway_bridge.psp.stripe.sign_header`): a second `checkout.session.completed` with a new
event id for a deposit that already succeeded (must be acknowledged and move no money:
`settled_minor` stays the amount), and one signed with a wrong secret (must get 401).

Checks (request type "check"): a payment that ends in another state than its outcome
implies, a wrong settled amount, a forged webhook that was not refused.

    locust -f loadtests/locustfiles/webhooks.py --headless -u 10 -r 5 -t 30s \\
        --host http://127.0.0.1:8080
    # BRIDGE_API_KEYS_FILE=.run/bridge-api-keys.json, SIM_URL=http://127.0.0.1:8090,
    # BRIDGE_STRIPE_WEBHOOK_SECRET from .run/bridge.env (optional)
"""

from __future__ import annotations

import collections
import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, task
from locust.exception import LocustError

from gateway_bridge.psp.stripe import sign_header
from loadtests import thresholds
from loadtests.grpc_user import run_id, weighted_choice  # helpers; harmless for HTTP users

thresholds.install(fail_ratio_max=0.01, p99_ms_max=3000)

BRIDGE_URL_DEFAULT = "http://127.0.0.1:8080"
SIM_URL_DEFAULT = "http://127.0.0.1:8090"
# Inbox workers poll every BRIDGE_INBOX_POLL_MS (500 ms under `make run`); a deposit not
# settled well after a few polls is a failure, not a slow success.
SETTLE_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.1
# Each HTTP call's own bound (FastHttpUser's defaults are 60 s).
HTTP_TIMEOUT_S = 10.0
DEPOSIT_MIN_MINOR, DEPOSIT_MAX_MINOR = 1_000, 50_000
# PSPs with the share of deposits each gets.
PSPS = (("stripe", 0.5), ("adyen", 0.3), ("nowpayments", 0.2))
# Simulator outcome -> (share, the payment state it must end in).
OUTCOMES = {"succeeded": (0.9, "succeeded"), "failed": (0.1, "failed")}
# Succeeded Stripe deposits a user remembers for duplicate webhooks.
SUCCEEDED_TRACKED_MAX = 32
TERMINAL_STATES = frozenset({"succeeded", "failed", "expired", "mismatch", "partially_paid",
                             "charged_back", "timed_out"})


def _api_key() -> str:
    text = os.environ.get("BRIDGE_API_KEYS", "")
    path = os.environ.get("BRIDGE_API_KEYS_FILE", "")
    if not text and path:
        text = Path(path).read_text()
    if not text:
        raise LocustError("no cashier API key: set BRIDGE_API_KEYS_FILE (e.g. "
                          ".run/bridge-api-keys.json, written by `make run`) or BRIDGE_API_KEYS")
    keys: dict[str, str] = json.loads(text)
    return keys.get("cashier") or keys[sorted(keys)[0]]


class Cashier(FastHttpUser):
    host = BRIDGE_URL_DEFAULT
    wait_time = constant(0)
    network_timeout = HTTP_TIMEOUT_S
    connection_timeout = HTTP_TIMEOUT_S

    def on_start(self) -> None:
        self.rng = random.Random()
        self.auth = {"Authorization": f"Bearer {_api_key()}"}
        self.sim_url = os.environ.get("SIM_URL", SIM_URL_DEFAULT).rstrip("/")
        self.stripe_secret = os.environ.get("BRIDGE_STRIPE_WEBHOOK_SECRET", "")
        self.succeeded: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=SUCCEEDED_TRACKED_MAX)

    # --- deposits through the simulator ------------------------------------------------------

    @task(8)
    def deposit(self) -> None:
        psp = weighted_choice(self.rng.random(), PSPS)
        amount = self.rng.randint(DEPOSIT_MIN_MINOR, DEPOSIT_MAX_MINOR)
        body: dict[str, Any] = {"player_id": f"lt-{run_id()}-w{self.rng.randrange(200)}",
                                "amount_minor": amount, "currency": "USD", "psp": psp,
                                "method": "crypto" if psp == "nowpayments" else "card"}
        if psp == "nowpayments":
            body["pay_currency"] = "btc"
        headers = {**self.auth, "Idempotency-Key": f"lt-dep-{run_id()}-{uuid.uuid4().hex}"}
        with self.client.post("/v1/deposits", json=body, headers=headers,
                              name=f"/v1/deposits ({psp})", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"expected 201, got {r.status_code}")
                return
            payment = r.json()
        outcome = weighted_choice(self.rng.random(),
                                  [(o, share) for o, (share, _) in OUTCOMES.items()])
        path = f"/_sim/deposits/{psp}/{payment['psp_reference']}/complete"
        with self.client.post(self.sim_url + path, json={"outcome": outcome},
                              name="sim: complete deposit", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"simulator answered {r.status_code}")
                return
        self._settle(payment, amount, OUTCOMES[outcome][1])

    def _settle(self, payment: dict[str, Any], amount: int, expected: str) -> None:
        """Polls the payment until it is final; reports the time as a 'flow' request."""
        started = time.perf_counter()
        deadline = started + SETTLE_TIMEOUT_S
        seen: dict[str, Any] = {}
        while time.perf_counter() < deadline:
            seen = self._payment(payment["id"]) or seen
            if seen.get("state") in TERMINAL_STATES:
                break
            gevent.sleep(POLL_INTERVAL_S)
        elapsed_ms = (time.perf_counter() - started) * 1000
        state = seen.get("state")
        problem = None
        if state not in TERMINAL_STATES:
            problem = f"not final within {SETTLE_TIMEOUT_S:.0f} s (last state {state})"
        self.environment.events.request.fire(
            request_type="flow", name="deposit settled", response_time=elapsed_ms,
            response_length=0, context={},
            exception=TimeoutError(problem) if problem else None)
        if problem:
            return
        if state != expected:
            thresholds.fire_check(self.environment, "deposit final state",
                                  f"outcome meant {expected}, the payment ended {state}")
        elif expected == "succeeded" and seen.get("settled_minor") != amount:
            thresholds.fire_check(self.environment, "deposit settled amount",
                                  "a succeeded deposit settled another amount than was paid")
        elif expected == "succeeded" and payment["psp"] == "stripe":
            self.succeeded.append({**seen, "amount_minor": amount})

    def _payment(self, payment_id: str) -> dict[str, Any] | None:
        with self.client.get(f"/v1/payments/{payment_id}", headers=self.auth,
                             name="/v1/payments/[id]", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"expected 200, got {r.status_code}")
                return None
            data: dict[str, Any] = r.json()
            return data

    # --- hand-signed Stripe webhooks -------------------------------------------------------

    @task(1)
    def stripe_duplicate(self) -> None:
        """A new event id for a session that already succeeded: acknowledged, no money."""
        if not self.stripe_secret or not self.succeeded:
            return
        payment = self.rng.choice(self.succeeded)
        with self.client.get(f"{self.sim_url}/_sim/objects/stripe/{payment['psp_reference']}",
                             name="sim: get object", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"simulator answered {r.status_code}")
                return
            session = r.json()["api"]
        status = self._post_stripe_event(session, self.stripe_secret, name="(duplicate)")
        if status != 200:
            return
        seen = self._payment(payment["id"])
        if seen is not None and (seen["state"] != "succeeded"
                                 or seen.get("settled_minor") != payment["amount_minor"]):
            thresholds.fire_check(self.environment, "duplicate webhook",
                                  "a duplicate completion changed a succeeded deposit")

    @task(1)
    def stripe_forged(self) -> None:
        """Signed with the wrong secret: the bridge must answer 401 and store nothing."""
        if not self.stripe_secret or not self.succeeded:
            return
        session = {"id": self.rng.choice(self.succeeded)["psp_reference"],
                   "object": "checkout.session", "payment_status": "paid"}
        status = self._post_stripe_event(session, "whsec_forged_by_loadtest",
                                         name="(forged)", expect=401)
        if status not in (None, 401):
            thresholds.fire_check(self.environment, "forged webhook",
                                  "a forged webhook was not refused")

    def _post_stripe_event(self, session: dict[str, Any], secret: str, *, name: str,
                           expect: int = 200) -> int | None:
        event = {"id": f"evt_lt_{uuid.uuid4().hex}", "object": "event",
                 "type": "checkout.session.completed", "created": int(time.time()),
                 "livemode": False, "data": {"object": session}}
        body = json.dumps(event).encode()
        headers = {"Stripe-Signature": sign_header(secret, int(time.time()), body),
                   "Content-Type": "application/json"}
        with self.client.post("/webhooks/stripe", data=body, headers=headers,
                              name=f"/webhooks/stripe {name}", catch_response=True) as r:
            if r.status_code != expect:
                r.failure(f"expected {expect}, got {r.status_code}")
            else:
                r.success()
            return r.status_code or None
