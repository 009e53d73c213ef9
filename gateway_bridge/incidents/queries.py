"""SQL of incidents: what the detection rules measure, the incident records with their
timeline and affected payments, the signals kept for the rules (webhook rejections per
minute, probe results), and the support commands' reads and writes around them.

Windows are passed in seconds ($n) and turned into intervals here, so no statement is
built from strings.
"""

# One evaluation at a time across bridge replicas; released when its transaction ends.
# The key is arbitrary but fixed: "incident" in ASCII.
TRY_EVALUATION_LOCK = "SELECT pg_try_advisory_xact_lock(1768842851)"

# Finished deposits per PSP and method in the window, by when they finished (failed or
# credited). Expired ones are payers who walked away, not a failure of the PSP; a
# charged-back deposit's last change is the dispute, not its outcome, so it is left out.
DEPOSIT_OUTCOMES = """
SELECT psp, method,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'failed') AS failed
FROM bridge.payments
WHERE direction = 'deposit' AND state IN ('succeeded', 'failed')
  AND updated_at > now() - make_interval(secs => $1)
GROUP BY psp, method"""

# Each of the next five statements returns, per scope (the PSP, or PSP and method), the
# count of every matching payment (`total`) and at most $1 of them: one PSP's flood never
# pushes another PSP's payments out of the count.
_FOUND = "id, psp, method, player_id, currency, amount_minor, state, total"

FAILED_DEPOSITS = f"""
SELECT {_FOUND} FROM (
    SELECT p.*, count(*) OVER w AS total, row_number() OVER (w ORDER BY updated_at DESC) AS n
    FROM bridge.payments p
    WHERE direction = 'deposit' AND state = 'failed'
      AND updated_at > now() - make_interval(secs => $2)
    WINDOW w AS (PARTITION BY psp, method)) AS found
WHERE n <= $1"""

# Money reserved for a withdrawal longer than the SLA and not paid out, counted from when
# it could first go out: creation, or the risk team's approval of a held one. One still
# held waits for a person on purpose (that queue is watched on its own), and a timed-out
# withdrawal the wallet never reserved holds no money.
DELAYED_WITHDRAWALS = f"""
SELECT {_FOUND} FROM (
    SELECT p.*, count(*) OVER w AS total, row_number() OVER (w ORDER BY created_at) AS n
    FROM bridge.payments p
    WHERE direction = 'withdrawal' AND withdrawal_id IS NOT NULL
      AND state IN ('reserved', 'payout_pending', 'timed_out')
      AND NOT EXISTS (SELECT 1 FROM bridge.risk_decisions r
                      WHERE r.payment_id = p.id AND r.review_status = 'pending')
      AND greatest(created_at, (SELECT r.reviewed_at FROM bridge.risk_decisions r
                                WHERE r.payment_id = p.id))
          < now() - make_interval(secs => $2)
    WINDOW w AS (PARTITION BY psp)) AS found
WHERE n <= $1"""

# Held as a mismatch within the window and not yet dealt with by support (dismissed).
MISMATCHES = f"""
SELECT {_FOUND} FROM (
    SELECT p.*, count(*) OVER w AS total, row_number() OVER (w ORDER BY updated_at DESC) AS n
    FROM bridge.payments p
    WHERE state = 'mismatch' AND attention IS NOT NULL
      AND updated_at > now() - make_interval(secs => $2)
    WINDOW w AS (PARTITION BY psp)) AS found
WHERE n <= $1"""

# Timed out and not yet dealt with by support.
TIMEOUTS = f"""
SELECT {_FOUND} FROM (
    SELECT p.*, count(*) OVER w AS total, row_number() OVER (w ORDER BY updated_at DESC) AS n
    FROM bridge.payments p
    WHERE state = 'timed_out' AND attention IS NOT NULL
    WINDOW w AS (PARTITION BY psp)) AS found
WHERE n <= $1"""

# Payments still waiting on a PSP: what its outage holds up.
IN_FLIGHT = f"""
SELECT {_FOUND} FROM (
    SELECT p.*, count(*) OVER w AS total, row_number() OVER (w ORDER BY created_at DESC) AS n
    FROM bridge.payments p
    WHERE state IN ('created', 'pending', 'processing', 'requested', 'reserved',
                    'payout_pending')
    WINDOW w AS (PARTITION BY psp)) AS found
WHERE n <= $1"""

# Refused webhooks per cause, and verified events that named no payment of ours (the
# partial index inbox_settled_unmatched keeps this off the rest of the inbox).
CALLBACK_ERRORS = """
SELECT psp, cause, sum(count)::bigint AS n FROM bridge.webhook_rejections_by_minute
WHERE minute > now() - make_interval(secs => $1)
GROUP BY psp, cause
UNION ALL
SELECT psp, 'unknown_payment', count(*) FROM bridge.inbox
WHERE status IN ('ignored', 'dead') AND processed_at > now() - make_interval(secs => $1)
  AND (last_error LIKE 'unknown payment%' OR last_error LIKE 'no payment matches%')
GROUP BY psp"""

# The latest probes of each PSP, newest first, no older than $2 seconds: a replica that
# stopped probing leaves no stale verdict behind.
RECENT_PROBES = """
SELECT psp, array_agg(up ORDER BY checked_at DESC) AS ups,
       (array_agg(reason ORDER BY checked_at DESC))[1] AS last_reason
FROM (SELECT psp, up, reason, checked_at,
             row_number() OVER (PARTITION BY psp ORDER BY checked_at DESC) AS n
      FROM bridge.psp_probes WHERE checked_at > now() - make_interval(secs => $2)) AS recent
WHERE n <= $1
GROUP BY psp"""

RECORD_PROBES = """
INSERT INTO bridge.psp_probes (psp, up, status, reason, duration_ms)
SELECT * FROM unnest($1::text[], $2::boolean[], $3::integer[], $4::text[], $5::integer[])"""

COUNT_REJECTION_MINUTE = """
INSERT INTO bridge.webhook_rejections_by_minute (psp, cause, minute, count)
VALUES ($1, $2, date_trunc('minute', now()), $3)
ON CONFLICT (psp, minute, cause) DO UPDATE
SET count = bridge.webhook_rejections_by_minute.count + $3"""

# Signals older than the longest window any rule or report reads.
PRUNE_REJECTIONS = """
DELETE FROM bridge.webhook_rejections_by_minute
WHERE minute < now() - make_interval(secs => $1)"""
PRUNE_PROBES = "DELETE FROM bridge.psp_probes WHERE checked_at < now() - make_interval(secs => $1)"

_INCIDENT = """id, rule, scope, psp, stage, summary, observed, detected_at, last_seen_at,
cleared_at, acknowledged_by, acknowledged_at, resolved_by, resolved_at, cause, resolution"""

OPEN_INCIDENTS_FOR_UPDATE = f"""
SELECT {_INCIDENT} FROM bridge.incidents WHERE stage <> 'resolved' ORDER BY id FOR UPDATE"""

OPEN_COUNTS = """
SELECT rule, stage, count(*) AS n FROM bridge.incidents WHERE stage <> 'resolved'
GROUP BY rule, stage"""

INSERT_INCIDENT = """
INSERT INTO bridge.incidents (rule, scope, psp, summary, observed)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (rule, scope) WHERE stage <> 'resolved' DO NOTHING
RETURNING id"""

# Scopes whose last incident was resolved by force while its condition still held: no new
# incident for them until the condition has cleared once.
QUIET_SCOPES = """
SELECT rule, scope FROM bridge.incidents WHERE quiet_until_clear AND stage = 'resolved'"""

UNQUIET = """
UPDATE bridge.incidents SET quiet_until_clear = false
WHERE rule = $1 AND scope = $2 AND quiet_until_clear"""

SEEN_AGAIN = """
UPDATE bridge.incidents SET last_seen_at = now(), summary = $2, observed = $3,
                            cleared_at = NULL
WHERE id = $1"""

CLEARED = "UPDATE bridge.incidents SET cleared_at = now() WHERE id = $1 AND cleared_at IS NULL"

ADD_EVENT = """
INSERT INTO bridge.incident_events (incident_id, kind, actor, text, data)
VALUES ($1, $2, $3, $4, $5)"""

LAST_OBSERVATION = """
SELECT max(at) FROM bridge.incident_events
WHERE incident_id = $1 AND kind IN ('detected', 'observed', 'returned')"""

ADD_PAYMENTS = """
INSERT INTO bridge.incident_payments (incident_id, payment_id, player_id, currency,
                                      amount_minor, state)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])
ON CONFLICT (incident_id, payment_id) DO NOTHING
RETURNING payment_id"""

INCIDENT_FOR_UPDATE = f"SELECT {_INCIDENT} FROM bridge.incidents WHERE id = $1 FOR UPDATE"

SET_STAGE = """
UPDATE bridge.incidents
SET stage = $2,
    acknowledged_by = coalesce(acknowledged_by, $3),
    acknowledged_at = coalesce(acknowledged_at, now())
WHERE id = $1"""

RESOLVE = """
UPDATE bridge.incidents
SET stage = 'resolved', resolved_at = now(), resolved_by = $2, cause = $3, resolution = $4,
    quiet_until_clear = cleared_at IS NULL,
    acknowledged_by = coalesce(acknowledged_by, $2),
    acknowledged_at = coalesce(acknowledged_at, now())
WHERE id = $1"""

# Incidents with their impact: payments, players and money at risk per currency.
_IMPACT = """
(SELECT count(*) FROM bridge.incident_payments p WHERE p.incident_id = i.id) AS payments,
(SELECT count(DISTINCT player_id) FROM bridge.incident_payments p
 WHERE p.incident_id = i.id) AS players,
(SELECT coalesce(jsonb_object_agg(currency, total), '{}'::jsonb)
 FROM (SELECT currency, sum(amount_minor)::text AS total FROM bridge.incident_payments p
       WHERE p.incident_id = i.id GROUP BY currency) AS s) AS at_risk"""

LIST_INCIDENTS = f"""
SELECT {_INCIDENT}, {_IMPACT} FROM bridge.incidents i
WHERE ($1::text IS NULL OR stage = $1) AND ($2 OR stage <> 'resolved')
ORDER BY id DESC LIMIT $3"""

INCIDENT = f"SELECT {_INCIDENT}, {_IMPACT} FROM bridge.incidents i WHERE id = $1"

# The first $2 events (detection) and the last $3 (the latest actions and the resolution);
# a long, flapping incident loses its middle, never its ends.
TIMELINE = """
SELECT id, at, kind, actor, text, data FROM (
    (SELECT * FROM bridge.incident_events WHERE incident_id = $1 ORDER BY id LIMIT $2)
    UNION
    (SELECT * FROM bridge.incident_events WHERE incident_id = $1 ORDER BY id DESC LIMIT $3)
) AS e ORDER BY id"""

TIMELINE_LENGTH = "SELECT count(*) FROM bridge.incident_events WHERE incident_id = $1"

# Every affected payment by the state it is in now, and how many still wait for someone
# (open at the PSP, or flagged for support).
STATES_NOW = """
SELECT p.state, count(*) AS payments,
       count(*) FILTER (WHERE p.attention IS NOT NULL
                        OR p.state IN ('created', 'pending', 'processing', 'requested',
                                       'reserved', 'payout_pending', 'timed_out')) AS waiting
FROM bridge.incident_payments ip JOIN bridge.payments p ON p.id = ip.payment_id
WHERE ip.incident_id = $1 GROUP BY p.state ORDER BY p.state"""

INCIDENT_PAYMENTS = """
SELECT ip.payment_id, ip.player_id, ip.currency, ip.amount_minor, ip.state AS state_seen,
       p.state AS state_now, p.attention, ip.added_at
FROM bridge.incident_payments ip JOIN bridge.payments p ON p.id = ip.payment_id
WHERE ip.incident_id = $1 ORDER BY ip.added_at, ip.payment_id LIMIT $2"""

INCIDENTS_OF_PAYMENT = """
SELECT incident_id FROM bridge.incident_payments ip
JOIN bridge.incidents i ON i.id = ip.incident_id
WHERE ip.payment_id = $1 AND i.stage <> 'resolved'"""

# The report's chart, per bucket of $4 seconds from $2 up to $3: the PSP's payments that
# changed into a settled state and into a failed or held one (from the payments' history,
# so a payment settled later still shows where it failed), the webhook errors and the
# failed probes.
ACTIVITY = """
WITH buckets AS (
    SELECT bucket FROM generate_series($2::timestamptz, $3::timestamptz,
                                       make_interval(secs => $4)) AS bucket
    WHERE bucket < $3),
changes AS (
    SELECT h.at, h.to_state FROM bridge.payment_history h
    JOIN bridge.payments p ON p.id = h.payment_id
    WHERE p.psp = $1 AND h.at >= $2 AND h.at < $3
      AND h.from_state IS DISTINCT FROM h.to_state)
SELECT b.bucket,
       (SELECT count(*) FROM changes c
        WHERE c.at >= b.bucket AND c.at < b.bucket + make_interval(secs => $4)
          AND c.to_state IN ('succeeded', 'paid')) AS ok,
       (SELECT count(*) FROM changes c
        WHERE c.at >= b.bucket AND c.at < b.bucket + make_interval(secs => $4)
          AND c.to_state IN ('failed', 'payout_failed', 'mismatch', 'timed_out',
                             'partially_paid')) AS bad,
       (SELECT coalesce(sum(count), 0)::bigint FROM bridge.webhook_rejections_by_minute w
        WHERE w.psp = $1 AND w.minute >= b.bucket
          AND w.minute < b.bucket + make_interval(secs => $4)) AS rejected,
       (SELECT count(*) FROM bridge.psp_probes r
        WHERE r.psp = $1 AND NOT r.up AND r.checked_at >= b.bucket
          AND r.checked_at < b.bucket + make_interval(secs => $4)) AS probes_failed
FROM buckets b ORDER BY b.bucket"""

# Running totals of rejected webhooks per (psp, cause).
COUNT_REJECTION_TOTAL = """
INSERT INTO bridge.webhook_rejections (psp, cause, count) VALUES ($1, $2, $3)
ON CONFLICT (psp, cause) DO UPDATE
SET count = bridge.webhook_rejections.count + $3, last_seen_at = now()"""
