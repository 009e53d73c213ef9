"""AML's SQL (migration 0013). A case row is locked (FOR UPDATE) by whoever changes it."""

# The facts of one payment's player, in one round trip: $1 player, $2 currency, the
# windows in seconds ($3 cumulative, $4 structuring, $5 instruments, $6 currencies), $7 the
# payment itself (left out of the deposits: the rules add it). Deposits count when credited
# or still open; failed and expired ones do not.
FACTS = """
SELECT
  (SELECT coalesce(sum(amount_minor), 0)::bigint FROM bridge.payments
   WHERE player_id = $1 AND direction = 'deposit' AND currency = $2 AND id <> $7
     AND state NOT IN ('failed', 'expired')
     AND created_at > now() - $3 * interval '1 second') AS cumulative,
  ARRAY(SELECT ROW(id, amount_minor) FROM bridge.payments
        WHERE player_id = $1 AND direction = 'deposit' AND currency = $2 AND id <> $7
          AND state NOT IN ('failed', 'expired')
          AND created_at > now() - $4 * interval '1 second'
        ORDER BY created_at DESC LIMIT 1000) AS recent,
  (SELECT count(DISTINCT request ->> 'instrument_id') FROM bridge.payments
   WHERE player_id = $1 AND coalesce(request ->> 'instrument_id', '') <> ''
     AND created_at > now() - $5 * interval '1 second') AS instruments,
  (SELECT count(DISTINCT currency) FROM bridge.payments
   WHERE player_id = $1 AND state NOT IN ('failed', 'expired', 'rejected')
     AND created_at > now() - $6 * interval '1 second') AS currencies"""

# A hit: a new case, or its payments ($5) added to the player's open case of that rule (at
# most $6 listed: a case is about a pattern, not a ledger).
OPEN_OR_EXTEND = """
INSERT INTO bridge.aml_cases (player_id, rule, holds_withdrawals, detail, payment_ids)
VALUES ($1, $2, $3, $4, $5::text[])
ON CONFLICT (player_id, rule) WHERE state IN ('open', 'investigating')
DO UPDATE SET payment_ids = ARRAY(
                  SELECT x FROM unnest(bridge.aml_cases.payment_ids || $5::text[])
                      WITH ORDINALITY AS u(x, n)
                  GROUP BY x ORDER BY min(n) LIMIT $6),
              detail = EXCLUDED.detail, updated_at = now()
RETURNING id, (xmax = 0) AS opened"""

# One player's AML decisions in turn: rules opening cases, a withdrawal's hold, an
# analyst's release (transaction-scoped: released at commit).
LOCK_PLAYER = "SELECT pg_advisory_xact_lock(hashtext('aml:' || $1))"

# The rules that already have a case naming this payment ($2), in any state: a payment
# looked at again (a withdrawal before each payout attempt) never reopens a closed case.
RULES_NAMING = """
SELECT DISTINCT rule FROM bridge.aml_cases WHERE player_id = $1 AND $2 = ANY(payment_ids)"""

HOLDING_CASES = """
SELECT id FROM bridge.aml_cases
WHERE player_id = $1 AND holds_withdrawals AND state IN ('open', 'investigating')
ORDER BY id"""

CASE = """
SELECT id, player_id, rule, state, holds_withdrawals, detail, payment_ids, narrative,
       opened_at, updated_at
FROM bridge.aml_cases WHERE id = $1"""

CASE_FOR_UPDATE = CASE + " FOR UPDATE"

CASES = """
SELECT id, player_id, rule, state, holds_withdrawals, detail, payment_ids, narrative,
       opened_at, updated_at
FROM bridge.aml_cases WHERE state = ANY($1::text[]) ORDER BY id DESC LIMIT $2"""

SET_STATE = """
UPDATE bridge.aml_cases SET state = $2, narrative = $3, updated_at = now() WHERE id = $1"""

ADD_HISTORY = """
INSERT INTO bridge.aml_case_history (case_id, from_state, to_state, actor, note)
VALUES ($1, $2, $3, $4, $5)"""

HISTORY = """
SELECT at, from_state, to_state, actor, note FROM bridge.aml_case_history
WHERE case_id = $1 ORDER BY id LIMIT 500"""

# A suspicious-activity record's transactions: the case's payments as the bridge knows them.
CASE_PAYMENTS = """
SELECT id, direction, state, psp, method, currency, amount_minor, settled_minor,
       psp_reference, withdrawal_id, created_at
FROM bridge.payments WHERE id = ANY($1::text[]) ORDER BY created_at"""

# The gauges: cases not yet closed, by rule and hold, with the oldest one's age (seconds).
OPEN_COUNTS = """
SELECT rule, holds_withdrawals, count(*)::int AS n,
       extract(epoch FROM now() - min(opened_at))::float8 AS oldest_s
FROM bridge.aml_cases WHERE state IN ('open', 'investigating')
GROUP BY rule, holds_withdrawals"""

# Whether the little-play rule can read the wallet's journal from the bridge's database
# (CASE: has_table_privilege fails on a table that does not exist).
WALLET_JOURNAL_READABLE = """
SELECT CASE WHEN to_regclass('wallet.journal') IS NULL THEN false
            ELSE has_table_privilege('wallet.journal', 'SELECT')
                 AND has_table_privilege('wallet.postings', 'SELECT')
                 AND has_table_privilege('wallet.wallets', 'SELECT') END"""
