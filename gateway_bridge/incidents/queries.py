"""SQL of incidents: what the detection rules measure, the incident records with their
timeline and affected payments, the signals kept for the rules (webhook rejections per
minute, probe results), and the support commands' reads and writes around them.

Windows are passed in seconds ($n) and turned into intervals here, so no statement is
built from strings.
"""

# One evaluation at a time across bridge replicas; released when its transaction ends.
# The key is arbitrary but fixed: "incident" in ASCII.
TRY_EVALUATION_LOCK = "SELECT pg_try_advisory_xact_lock(1768842851)"

# Finished deposits per PSP and method in the window. A charged-back deposit had succeeded;
# an expired one is a payer who walked away, not a failure of the PSP.
DEPOSIT_OUTCOMES = """
SELECT psp, method,
       count(*) FILTER (WHERE state IN ('succeeded', 'charged_back')) AS succeeded,
       count(*) FILTER (WHERE state = 'failed') AS failed
FROM bridge.payments
WHERE direction = 'deposit' AND state IN ('succeeded', 'charged_back', 'failed')
  AND updated_at > now() - make_interval(secs => $1)
GROUP BY psp, method"""

_AFFECTED = "id, psp, method, player_id, currency, amount_minor, state"

FAILED_DEPOSITS = f"""
SELECT {_AFFECTED} FROM bridge.payments
WHERE direction = 'deposit' AND state = 'failed'
  AND updated_at > now() - make_interval(secs => $1)
ORDER BY updated_at DESC LIMIT $2"""

# Money reserved for a withdrawal longer than the SLA and not paid out. A withdrawal held
# by the risk rules waits for a person on purpose: that queue is watched on its own.
DELAYED_WITHDRAWALS = f"""
SELECT {_AFFECTED} FROM bridge.payments p
WHERE direction = 'withdrawal' AND state IN ('reserved', 'payout_pending', 'timed_out')
  AND created_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM bridge.risk_decisions r
                  WHERE r.payment_id = p.id AND r.review_status = 'pending')
ORDER BY created_at LIMIT $2"""

# Refused webhooks per cause, and verified events that named no payment of ours.
CALLBACK_ERRORS = """
SELECT psp, cause, sum(count)::bigint AS n FROM bridge.webhook_rejections_by_minute
WHERE minute > now() - make_interval(secs => $1)
GROUP BY psp, cause
UNION ALL
SELECT psp, 'unknown_payment', count(*) FROM bridge.inbox
WHERE status IN ('ignored', 'dead') AND processed_at > now() - make_interval(secs => $1)
  AND (last_error LIKE 'unknown payment%' OR last_error LIKE 'no payment matches%')
GROUP BY psp"""

MISMATCHES = f"""
SELECT {_AFFECTED} FROM bridge.payments
WHERE state = 'mismatch' AND updated_at > now() - make_interval(secs => $1)
ORDER BY updated_at DESC LIMIT $2"""

TIMEOUTS = f"""
SELECT {_AFFECTED} FROM bridge.payments WHERE state = 'timed_out'
ORDER BY updated_at DESC LIMIT $1"""

# Payments still waiting on a PSP: what its outage holds up.
IN_FLIGHT = f"""
SELECT {_AFFECTED} FROM bridge.payments
WHERE state IN ('created', 'pending', 'processing', 'reserved', 'payout_pending')
ORDER BY created_at DESC LIMIT $1"""

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

TIMELINE = """
SELECT at, kind, actor, text, data FROM bridge.incident_events
WHERE incident_id = $1 ORDER BY id LIMIT $2"""

INCIDENT_PAYMENTS = """
SELECT ip.payment_id, ip.player_id, ip.currency, ip.amount_minor, ip.state AS state_seen,
       p.state AS state_now, p.attention, ip.added_at
FROM bridge.incident_payments ip JOIN bridge.payments p ON p.id = ip.payment_id
WHERE ip.incident_id = $1 ORDER BY ip.added_at, ip.payment_id LIMIT $2"""

INCIDENTS_OF_PAYMENT = """
SELECT incident_id FROM bridge.incident_payments ip
JOIN bridge.incidents i ON i.id = ip.incident_id
WHERE ip.payment_id = $1 AND i.stage <> 'resolved'"""

# The report's chart: the PSP's payments settled per time bucket, good and bad, and the
# webhook errors and failed probes over the same buckets.
ACTIVITY = """
WITH buckets AS (
    SELECT generate_series($2::timestamptz, $3::timestamptz - make_interval(secs => $4),
                           make_interval(secs => $4)) AS bucket)
SELECT b.bucket,
       (SELECT count(*) FROM bridge.payments p
        WHERE p.psp = $1 AND p.updated_at >= b.bucket
          AND p.updated_at < b.bucket + make_interval(secs => $4)
          AND p.state IN ('succeeded', 'paid', 'charged_back', 'reversed')) AS ok,
       (SELECT count(*) FROM bridge.payments p
        WHERE p.psp = $1 AND p.updated_at >= b.bucket
          AND p.updated_at < b.bucket + make_interval(secs => $4)
          AND p.state IN ('failed', 'payout_failed', 'mismatch', 'timed_out',
                          'partially_paid')) AS bad,
       (SELECT coalesce(sum(count), 0)::bigint FROM bridge.webhook_rejections_by_minute w
        WHERE w.psp = $1 AND w.minute >= b.bucket
          AND w.minute < b.bucket + make_interval(secs => $4)) AS rejected,
       (SELECT count(*) FROM bridge.psp_probes r
        WHERE r.psp = $1 AND NOT r.up AND r.checked_at >= b.bucket
          AND r.checked_at < b.bucket + make_interval(secs => $4)) AS probes_failed
FROM buckets b ORDER BY b.bucket"""
