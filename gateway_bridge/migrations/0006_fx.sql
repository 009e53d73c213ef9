-- 0006: currency conversion (docs/FX.md). Why: a player may pay in a currency other than the
-- wallet's (crypto especially). The payment keeps what is paid in `currency`/`amount_minor`
-- (what the PSP is asked for and reports, so its events are matched as before) and names
-- the wallet credited in `wallet_currency` (NULL: the same currency, no conversion). `fx`
-- holds the quote shown to the cashier, the rate the credit used (rate, spread, source,
-- provider time) and what chargebacks took back in the wallet's currency.
--
-- fx_rate_pins: the rate a credit was sent to the wallet with, committed before the wallet
-- call, by wallet idempotency key. A wallet call that timed out may have been recorded; its
-- retry must send the identical request (same rate), never a newer rate under the same key.
-- No foreign key to payments on purpose: the pin is written while the inbox worker holds the
-- payment row FOR UPDATE, and a foreign key check would wait for that very lock.
-- (0005 is reserved for other work; the runner applies files by number, gaps allowed.)
ALTER TABLE bridge.payments
    ADD COLUMN wallet_currency text,
    ADD COLUMN fx jsonb,
    ADD CONSTRAINT payments_wallet_currency_check
        CHECK (wallet_currency IS NULL OR wallet_currency <> currency);

CREATE TABLE bridge.fx_rate_pins (
    wallet_key      text PRIMARY KEY,
    payment_id      text NOT NULL,
    paid_currency   text NOT NULL,
    wallet_currency text NOT NULL,
    rate            text NOT NULL,
    spread_bps      integer NOT NULL CHECK (spread_bps BETWEEN 0 AND 5000),
    source          text NOT NULL,
    as_of           timestamptz NOT NULL,
    pinned_at       timestamptz NOT NULL DEFAULT now()
);
