"""Every SQL statement of the risk screening, as named constants with $n parameters.

Lock order: a payment row (bridge.payments FOR UPDATE) before its risk decision row. The
cashier path and the status sync lock only the payment; support's approve/reject lock the
payment, then update the decision, in one transaction.

The wallet's journal is read, never written: `wallet.journal` and `wallet.postings` are the
wallet's tables in the same database (the bridge's role needs SELECT on them).
"""

INSERT_DECISION = """
INSERT INTO bridge.risk_decisions (payment_id, direction, player_id, currency, amount_minor,
                                   instrument_id, country, decision, rules, scoring,
                                   review_status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (payment_id) DO NOTHING"""

DECISION = """
SELECT payment_id, direction, player_id, currency, amount_minor, instrument_id, country,
       decision, rules, scoring, decided_at, review_status, reviewed_by, reviewed_at,
       review_reason
FROM bridge.risk_decisions WHERE payment_id = $1"""

# $1 player, $2 direction, $3 currency, $4 window (s), $5 the payment being decided.
PLAYER_VELOCITY = """
SELECT count(*) AS attempts,
       coalesce(sum(amount_minor) FILTER (WHERE currency = $3), 0)::bigint AS amount_minor
FROM bridge.risk_decisions
WHERE player_id = $1 AND direction = $2 AND payment_id <> $5
  AND decided_at > now() - make_interval(secs => $4::double precision)"""

# $1 instrument, $2 direction, $3 currency, $4 window (s), $5 the payment being decided.
INSTRUMENT_VELOCITY = """
SELECT count(*) AS attempts,
       coalesce(sum(amount_minor) FILTER (WHERE currency = $3), 0)::bigint AS amount_minor
FROM bridge.risk_decisions
WHERE instrument_id = $1 AND direction = $2 AND payment_id <> $5
  AND decided_at > now() - make_interval(secs => $4::double precision)"""

# $1 instrument, $2 the player asking, $3 window (s).
INSTRUMENT_OTHER_PLAYERS = """
SELECT count(DISTINCT player_id) FROM bridge.risk_decisions
WHERE instrument_id = $1 AND player_id <> $2
  AND decided_at > now() - make_interval(secs => $3::double precision)"""

# What the player's wallet in this currency took in deposits and staked in bets (net of
# rolled-back bets) in the window: the player buckets' side of each journal entry.
# $1 player, $2 currency, $3 window (s).
WAGERING = """
SELECT coalesce(sum(p.amount_minor) FILTER (WHERE j.kind = 'deposit'), 0)::bigint
           AS deposited_minor,
       coalesce(-sum(p.amount_minor) FILTER (WHERE j.kind IN ('bet', 'rollback')), 0)::bigint
           AS wagered_minor
FROM wallet.wallets w
JOIN wallet.journal j ON j.wallet_id = w.id
JOIN wallet.postings p ON p.journal_id = j.id AND p.account LIKE 'player:%'
WHERE w.player_id = $1 AND w.currency = $2 AND j.status = 'ok'
  AND j.kind IN ('deposit', 'bet', 'rollback')
  AND j.created_at > now() - make_interval(secs => $3::double precision)"""

# Only a pending review changes; the RETURNING row says whether this call won.
# $1 payment, $2 new status, $3 actor, $4 reason.
CLOSE_REVIEW = """
UPDATE bridge.risk_decisions
SET review_status = $2, reviewed_by = $3, reviewed_at = now(), review_reason = $4
WHERE payment_id = $1 AND review_status = 'pending'
RETURNING payment_id"""

LOG_REVIEW = """
INSERT INTO bridge.risk_review_log (payment_id, action, actor, reason)
VALUES ($1, $2, $3, $4)"""

PENDING_REVIEWS = """
SELECT payment_id, direction, player_id, currency, amount_minor, instrument_id, country,
       decision, rules, scoring, decided_at, review_status
FROM bridge.risk_decisions
WHERE review_status = 'pending' ORDER BY decided_at, payment_id LIMIT $1"""

REVIEW_LOG = """
SELECT action, actor, reason, at FROM bridge.risk_review_log
WHERE payment_id = $1 ORDER BY id LIMIT $2"""
