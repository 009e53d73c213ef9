"""The routing evidence's SQL (bridge.routing_tallies, migration 0008)."""

# $1 psp, $2 method, $3 currency, $4 success (bool), $5 half-life (s). The stored counts are
# faded to now() and the outcome added, in one statement.
RECORD_OUTCOME = """
INSERT INTO bridge.routing_tallies AS t (psp, method, currency, successes, failures, at)
VALUES ($1, $2, $3, CASE WHEN $4 THEN 1 ELSE 0 END, CASE WHEN $4 THEN 0 ELSE 1 END, now())
ON CONFLICT (psp, method, currency) DO UPDATE
SET successes = t.successes * power(0.5, greatest(extract(epoch FROM now() - t.at), 0)
                                         / $5::double precision) + EXCLUDED.successes,
    failures = t.failures * power(0.5, greatest(extract(epoch FROM now() - t.at), 0)
                                       / $5::double precision) + EXCLUDED.failures,
    at = greatest(t.at, now())"""

# $1 psps, $2 method, $3 currency; the counts as last stored, with their age in seconds.
TALLIES = """
SELECT psp, successes, failures, extract(epoch FROM now() - at)::double precision AS age_s
FROM bridge.routing_tallies WHERE psp = ANY($1::text[]) AND method = $2 AND currency = $3"""
