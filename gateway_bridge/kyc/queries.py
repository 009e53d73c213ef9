"""KYC's SQL (migration 0012). A player's row is locked (FOR UPDATE) by whoever changes it:
starting a check, a provider's answer, support."""

ENSURE = """
INSERT INTO bridge.kyc (player_id, state) VALUES ($1, 'unverified')
ON CONFLICT (player_id) DO NOTHING"""

KYC = """
SELECT player_id, state, provider, applicant_id, check_id, checks_started, birth_date,
       country, documents_expire_on, cash_out_allowed, was_rejected, restriction, updated_at
FROM bridge.kyc WHERE player_id = $1"""

KYC_FOR_UPDATE = KYC + " FOR UPDATE"

KYC_BY_CHECK_FOR_UPDATE = """
SELECT player_id, state, provider, applicant_id, check_id, checks_started, birth_date,
       country, documents_expire_on, cash_out_allowed, was_rejected, restriction, updated_at
FROM bridge.kyc WHERE provider = $1 AND check_id = $2 FOR UPDATE"""

KYC_BY_CHECK = """
SELECT player_id, state, provider, applicant_id, check_id, checks_started, birth_date,
       country, documents_expire_on, cash_out_allowed, was_rejected, restriction, updated_at
FROM bridge.kyc WHERE provider = $1 AND check_id = $2"""

EVENT_SEEN = "SELECT 1 FROM bridge.kyc_events WHERE provider = $1 AND event_key = $2"

# Checks whose answer is late: pending longer than $1 ms, oldest first, at most $2.
LATE_CHECKS = """
SELECT player_id, check_id FROM bridge.kyc
WHERE state = 'pending' AND check_id <> ''
  AND updated_at < now() - $1 * interval '1 millisecond'
ORDER BY updated_at LIMIT $2"""

# A late check asked about: it waits another period before it is asked again.
TOUCH = "UPDATE bridge.kyc SET updated_at = now() WHERE player_id = $1 AND state = 'pending'"

SAVE = """
UPDATE bridge.kyc SET state = $2, provider = $3, applicant_id = $4, check_id = $5,
       checks_started = $6, birth_date = $7, country = $8, documents_expire_on = $9,
       cash_out_allowed = $10, was_rejected = $11, restriction = $12,
       restriction_version = restriction_version + (restriction <> $12)::int,
       -- A new restriction is due at once, whatever became of the one before.
       restriction_tried_at = CASE WHEN restriction <> $12 THEN NULL
                                   ELSE restriction_tried_at END,
       updated_at = now()
WHERE player_id = $1"""

# Players whose restriction the wallet does not have yet, at most $1, those never tried or
# tried longest ago first, none tried in the last $2 ms (a refused one can't starve others).
UNSENT_RESTRICTIONS = """
SELECT player_id FROM bridge.kyc
WHERE restriction_version > restriction_sent_version
  AND (restriction_tried_at IS NULL
       OR restriction_tried_at < now() - $2 * interval '1 millisecond')
ORDER BY restriction_tried_at NULLS FIRST, player_id LIMIT $1"""

# One player's restriction, locked while it is sent (so two senders can't deliver versions
# out of order); a player another sender holds is skipped.
RESTRICTION_FOR_SENDING = """
SELECT restriction, restriction_version FROM bridge.kyc
WHERE player_id = $1 AND restriction_version > restriction_sent_version
FOR UPDATE SKIP LOCKED"""

RESTRICTION_TRIED = "UPDATE bridge.kyc SET restriction_tried_at = now() WHERE player_id = $1"

RESTRICTION_SENT = """
UPDATE bridge.kyc SET restriction_sent_version = $2, restriction_tried_at = now()
WHERE player_id = $1"""

# Verified players after $1 (by id), at most $2: reassessed under the current settings.
VERIFIED_AFTER = """
SELECT player_id FROM bridge.kyc WHERE state = 'verified' AND player_id > $1
ORDER BY player_id LIMIT $2"""

ADD_HISTORY = """
INSERT INTO bridge.kyc_history (player_id, from_state, to_state, source, actor, note)
VALUES ($1, $2, $3, $4, $5, $6)"""

# The newest $2 changes, oldest first.
HISTORY = """
SELECT at, from_state, to_state, source, actor, note FROM (
    SELECT id, at, from_state, to_state, source, actor, note FROM bridge.kyc_history
    WHERE player_id = $1 ORDER BY id DESC LIMIT $2) AS newest
ORDER BY id"""

# A provider's webhook, kept once: a second delivery finds it and changes nothing.
RECORD_EVENT = """
INSERT INTO bridge.kyc_events (provider, event_key, outcome) VALUES ($1, $2, $3)
ON CONFLICT (provider, event_key) DO NOTHING RETURNING event_key"""

# What an unverified player has deposited so far in the threshold's currency ($2): credited,
# or still open (so deposits started side by side can't slip past the threshold together).
DEPOSITED = """
SELECT coalesce(sum(CASE WHEN settled_minor > 0 THEN settled_minor
                         WHEN state NOT IN ('created', 'pending', 'processing') THEN 0
                         WHEN coalesce(wallet_currency, '') = '' THEN amount_minor
                         ELSE coalesce((fx -> 'quote' ->> 'estimated_credit_minor')::bigint,
                                       0) END), 0)::bigint
FROM bridge.payments
WHERE player_id = $1 AND direction = 'deposit'
  AND coalesce(nullif(wallet_currency, ''), currency) = $2"""

UNSENT_COUNT = """
SELECT count(*)::int FROM bridge.kyc WHERE restriction_version > restriction_sent_version"""
