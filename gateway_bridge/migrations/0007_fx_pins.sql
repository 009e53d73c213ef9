-- 0007: what a chargeback of a converted deposit takes back, pinned per wallet key
-- (docs/FX.md, "Chargebacks"). Why: the debit was computed from the disputes already applied
-- to the payment, while the wallet key stays `bridge:chargeback:<payment>:<dispute>`. A
-- dispute whose wallet call was recorded but unanswered was then recomputed on its retry
-- against a different set of applied disputes, and refused as IDEMPOTENCY_KEY_REUSED. Now
-- the debit is computed once, against what the payment's earlier pins already take (applied
-- or still in flight), committed here before the wallet call, and every retry sends it as is.
-- No foreign key to payments, as for fx_rate_pins: the pin is written while the inbox worker
-- holds the payment row FOR UPDATE, and a foreign key check would wait for that very lock.
CREATE TABLE bridge.fx_chargeback_pins (
    wallet_key  text PRIMARY KEY,
    payment_id  text NOT NULL,
    paid_minor  bigint NOT NULL CHECK (paid_minor > 0),
    debit_minor bigint NOT NULL CHECK (debit_minor >= 0),
    pinned_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX fx_chargeback_pins_payment_idx ON bridge.fx_chargeback_pins (payment_id);
