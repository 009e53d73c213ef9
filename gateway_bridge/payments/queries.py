"""The payments' SQL (payments, their history, the inbox), as named constants with $n
parameters.

Lock order: an inbox row (claimed FOR UPDATE SKIP LOCKED) before its payment row (FOR
UPDATE). The cashier API and the status sync lock only a payment row, and never while an
inbox row is held. Nobody locks two payments, so no cycle can form.
"""

PAYMENT_COLUMNS = """id, direction, state, psp, method, player_id, currency, amount_minor,
settled_minor, charged_back_minor, psp_reference, psp_reference_alt, withdrawal_id, client,
client_key, request, payout_destination, instructions, refusal, attention, sync_attempts,
next_sync_at, created_at, updated_at, wallet_currency, fx, routing"""

INSERT_PAYMENT = f"""
INSERT INTO bridge.payments (id, direction, state, psp, method, player_id, currency,
                             amount_minor, client, client_key, request, next_sync_at,
                             payout_destination, wallet_currency, fx, routing)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (client, client_key) DO NOTHING
RETURNING {PAYMENT_COLUMNS}"""

PAYMENT_BY_CLIENT_KEY = f"""
SELECT {PAYMENT_COLUMNS} FROM bridge.payments WHERE client = $1 AND client_key = $2"""

PAYMENT = f"SELECT {PAYMENT_COLUMNS} FROM bridge.payments WHERE id = $1"

# Support's lookup by whatever reference is at hand: our payment id, the PSP's reference (or
# its second one), the wallet's withdrawal id, or the cashier's Idempotency-Key. Not on any
# hot path; bounded by $2.
PAYMENTS_BY_ANY_REFERENCE = f"""
SELECT {PAYMENT_COLUMNS} FROM bridge.payments
WHERE id = $1 OR psp_reference = $1 OR psp_reference_alt = $1 OR withdrawal_id = $1
   OR client_key = $1
ORDER BY created_at DESC LIMIT $2"""

PAYMENT_FOR_UPDATE = f"SELECT {PAYMENT_COLUMNS} FROM bridge.payments WHERE id = $1 FOR UPDATE"

PAYMENT_BY_REFERENCE_FOR_UPDATE = f"""
SELECT {PAYMENT_COLUMNS} FROM bridge.payments
WHERE psp = $1 AND (psp_reference = $2 OR psp_reference_alt = $2)
ORDER BY created_at LIMIT 1 FOR UPDATE"""

SAVE_PAYMENT = """
UPDATE bridge.payments
SET state = $2, psp_reference = $3, psp_reference_alt = $4, withdrawal_id = $5,
    instructions = $6, settled_minor = $7, charged_back_minor = $8, attention = $9,
    sync_attempts = $10, next_sync_at = $11, refusal = $12, payout_destination = $13,
    fx = $14, psp = $15, routing = $16, updated_at = now()
WHERE id = $1"""

INSERT_HISTORY = """
INSERT INTO bridge.payment_history (payment_id, from_state, to_state, source, psp_event_type,
                                    inbox_id, note)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""

HISTORY = """
SELECT at, from_state, to_state, source, psp_event_type, inbox_id, note
FROM bridge.payment_history WHERE payment_id = $1 ORDER BY id LIMIT $2"""

SYNC_DUE = """
SELECT id FROM bridge.payments
WHERE next_sync_at <= now() ORDER BY next_sync_at LIMIT $1"""

INSERT_EVENT = """
INSERT INTO bridge.inbox (psp, event_key, source, kind, psp_event_type, payment_id,
                          psp_reference, event)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (psp, event_key) DO NOTHING
RETURNING id"""

CLAIM_EVENT = """
SELECT id, psp, event_key, source, event, attempts FROM bridge.inbox
WHERE status = 'pending' AND next_attempt_at <= now()
ORDER BY next_attempt_at, id LIMIT 1
FOR UPDATE SKIP LOCKED"""

FINISH_EVENT = """
UPDATE bridge.inbox SET status = $2, attempts = attempts + 1, last_error = $3,
                        processed_at = now()
WHERE id = $1"""

RETRY_EVENT = """
UPDATE bridge.inbox
SET attempts = attempts + 1, last_error = $2,
    next_attempt_at = now() + make_interval(secs => $3::double precision / 1000)
WHERE id = $1"""

DEAD_EVENTS = """
SELECT id, psp, event_key, source, kind, psp_event_type, payment_id, psp_reference, status,
       attempts, next_attempt_at, last_error, received_at, processed_at
FROM bridge.inbox WHERE status = 'dead' AND id > $1 ORDER BY id LIMIT $2"""

# $1 NULL replays every dead event; the attempts budget starts again from zero.
REPLAY_DEAD = """
UPDATE bridge.inbox
SET status = 'pending', attempts = 0, next_attempt_at = now(), processed_at = NULL,
    last_error = left('replayed after: ' || coalesce(last_error, ''), 1000)
WHERE status = 'dead' AND ($1::bigint IS NULL OR id = $1)
RETURNING id"""

INBOX_COUNTS = "SELECT status, count(*) AS n FROM bridge.inbox GROUP BY status"

# The metrics gauges (gateway_bridge/metrics.py), one round trip. Payments of the last day
# by state (the funnel), payments waiting for support whatever their age by a bounded cause
# (the attention note itself is free text), and the events still to apply or dead, with the
# age of the oldest pending one per PSP.
OPERATIONAL_COUNTS = """
SELECT ARRAY(SELECT ROW(psp, direction, state, count(*)) FROM bridge.payments
             WHERE created_at > now() - interval '24 hours'
             GROUP BY psp, direction, state) AS payments,
       ARRAY(SELECT ROW(psp, cause, count(*)) FROM (
                 SELECT psp, CASE WHEN state = 'mismatch' THEN 'mismatch'
                                  WHEN state = 'timed_out' THEN 'timeout'
                                  WHEN state = 'partially_paid' THEN 'partial'
                                  WHEN attention LIKE 'conflict%' THEN 'conflict'
                                  WHEN attention LIKE 'event % dead-lettered%' THEN 'dead_letter'
                                  ELSE 'other' END AS cause
                 FROM bridge.payments
                 WHERE attention IS NOT NULL
                    OR state IN ('mismatch', 'timed_out', 'partially_paid')) AS a
             GROUP BY psp, cause) AS attention,
       ARRAY(SELECT ROW(psp, status, count(*),
                        extract(epoch FROM now() - min(received_at))::float8)
             FROM bridge.inbox WHERE status IN ('pending', 'dead')
             GROUP BY psp, status) AS inbox"""

# Closed-loop payouts (docs/ROUTING.md): the PSP of the player's latest credited deposit in
# this currency. $1 player, $2 currency.
LAST_DEPOSIT_PSP = """
SELECT psp FROM bridge.payments
WHERE player_id = $1 AND currency = $2 AND direction = 'deposit' AND settled_minor > 0
ORDER BY created_at DESC LIMIT 1"""

# Refunds owed at a PSP a routed payment left (migration 0010). The inbox inserts one when
# that PSP captured the payment anyway; a capture already owed is not owed twice.
INSERT_PSP_REFUND = """
INSERT INTO bridge.psp_refunds (payment_id, psp, psp_reference, amount_minor, currency)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (psp, psp_reference) DO NOTHING
RETURNING id"""

# The refund worker's lease: one due row is pushed $1 ms into the future just before the
# PSP is called, so another replica (or the next pass) leaves it alone meanwhile; a crash
# mid-call retries after the lease with the same idempotency key. `attempts` is the lease's
# fencing token: the worker's own updates name it, so a holder whose lease ran out can't
# overwrite what a later holder (or the PSP's notification) wrote.
LEASE_DUE_REFUND = """
UPDATE bridge.psp_refunds SET next_attempt_at = now() + $1 * interval '1 millisecond',
       attempts = attempts + 1, updated_at = now()
WHERE id = (SELECT id FROM bridge.psp_refunds
            WHERE state = 'owed' AND next_attempt_at <= now()
            ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, payment_id, psp, psp_reference, amount_minor, currency, state, attempts,
          refund_reference, last_error"""

# The worker's outcome of its leased attempt $5: refunded, requested (the PSP confirms
# later) or failed.
FINISH_REFUND = """
UPDATE bridge.psp_refunds SET state = $2, refund_reference = $3, last_error = $4,
       updated_at = now()
WHERE id = $1 AND state = 'owed' AND attempts = $5"""

RETRY_REFUND = """
UPDATE bridge.psp_refunds SET next_attempt_at = now() + $2 * interval '1 millisecond',
       last_error = $3, updated_at = now()
WHERE id = $1 AND state = 'owed' AND attempts = $4"""

# The PSP's notification of a refund's outcome, for the capture it names ($1 psp, $2 the
# capture's reference); locks the row so the worker's fenced update can't interleave.
REFUND_BY_CAPTURE_FOR_UPDATE = """
SELECT id, payment_id, psp, psp_reference, amount_minor, currency, state, attempts,
       refund_reference, last_error
FROM bridge.psp_refunds WHERE psp = $1 AND psp_reference = $2 FOR UPDATE"""

# A notified outcome: settles a refund that is owed (the notification beat the worker's
# answer) or requested.
SETTLE_REFUND = """
UPDATE bridge.psp_refunds SET state = $2, refund_reference = coalesce($3, refund_reference),
       last_error = $4, updated_at = now()
WHERE id = $1 AND state IN ('owed', 'requested')"""

REFUNDS_OF_PAYMENT = """
SELECT id, payment_id, psp, psp_reference, amount_minor, currency, state, attempts,
       refund_reference, last_error
FROM bridge.psp_refunds WHERE payment_id = $1 ORDER BY id"""

# Support (walletctl refunds): the refunds in a state, newest first, bounded by $2.
REFUNDS_IN_STATE = """
SELECT id, payment_id, psp, psp_reference, amount_minor, currency, state, attempts,
       refund_reference, last_error
FROM bridge.psp_refunds WHERE state = $1 ORDER BY id DESC LIMIT $2"""

# A failed refund asked for again: the refund worker's next pass tries it with fresh
# attempts (and the same idempotency key: refund-<id>).
REOPEN_REFUND = """
UPDATE bridge.psp_refunds SET state = 'owed', attempts = 0, next_attempt_at = now(),
       last_error = $2, updated_at = now()
WHERE id = $1 AND state = 'failed'
RETURNING id, payment_id, psp, psp_reference, amount_minor, currency, state, attempts,
          refund_reference, last_error"""

# A failed refund support made by hand at the PSP (its dashboard), with the PSP's reference.
REFUNDED_BY_HAND = """
UPDATE bridge.psp_refunds SET state = 'refunded', refund_reference = $2, last_error = $3,
       updated_at = now()
WHERE id = $1 AND state = 'failed'
RETURNING id, payment_id, psp, psp_reference, amount_minor, currency, state, attempts,
          refund_reference, last_error"""

# Withdrawals held for AML (attention "aml hold: ...") of a player with no holding case left:
# released to the status sync, which drives them on (payments.status_sync).
RELEASE_AML_HELD = """
UPDATE bridge.payments SET attention = NULL, next_sync_at = now(), updated_at = now()
WHERE player_id = $1 AND direction = 'withdrawal' AND state IN ('requested', 'reserved')
  AND attention LIKE 'aml hold:%'
RETURNING id"""
