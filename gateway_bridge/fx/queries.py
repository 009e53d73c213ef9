"""The FX pins' SQL (bridge.fx_rate_pins, bridge.fx_chargeback_pins; docs/FX.md)."""

# The first rate a credit was sent with stays its rate (migration 0006): written on its own
# connection (autocommit) before the wallet call, then read back, whoever wrote it.
PIN_FX_RATE = """
INSERT INTO bridge.fx_rate_pins (wallet_key, payment_id, paid_currency, wallet_currency, rate,
                                 spread_bps, source, as_of)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (wallet_key) DO NOTHING"""

FX_RATE_PIN = """
SELECT rate, spread_bps, source, as_of, pinned_at FROM bridge.fx_rate_pins WHERE wallet_key = $1"""

# A pin whose rate aged out while the wallet provably recorded nothing under its key gets a
# fresh rate; `pinned_at = $6` makes it a compare-and-set against the pin that was judged.
REPIN_FX_RATE = """
UPDATE bridge.fx_rate_pins
SET rate = $2, spread_bps = $3, source = $4, as_of = $5, pinned_at = now()
WHERE wallet_key = $1 AND pinned_at = $6"""

# The debit a chargeback of a converted deposit is sent with (migration 0007), written like a
# rate pin: own connection, before the wallet call, first writer wins.
PIN_FX_CHARGEBACK = """
INSERT INTO bridge.fx_chargeback_pins (wallet_key, payment_id, paid_minor, debit_minor)
VALUES ($1, $2, $3, $4)
ON CONFLICT (wallet_key) DO NOTHING"""

FX_CHARGEBACK_PIN = """
SELECT paid_minor, debit_minor FROM bridge.fx_chargeback_pins WHERE wallet_key = $1"""

# What the payment's other disputes take (applied or still being retried): read while the
# inbox worker holds the payment row, which serializes every dispute of one payment.
FX_CHARGEBACKS_PINNED = """
SELECT coalesce(sum(paid_minor), 0)::bigint AS paid_minor,
       coalesce(sum(debit_minor), 0)::bigint AS debit_minor
FROM bridge.fx_chargeback_pins WHERE payment_id = $1 AND wallet_key <> $2"""

# The wallet definitively refused the call made under this key (it recorded nothing that a
# retry must match): the next attempt computes its request afresh.
UNPIN_FX = """
WITH rate AS (DELETE FROM bridge.fx_rate_pins WHERE wallet_key = $1)
DELETE FROM bridge.fx_chargeback_pins WHERE wallet_key = $1"""
