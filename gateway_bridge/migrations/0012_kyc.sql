-- 0012: players' identity verification (docs/COMPLIANCE.md, KYC). One row per player with
-- the current check (only its answer counts) and what the provider confirmed; every change
-- kept in kyc_history with what caused it; the provider's webhooks kept once each.
CREATE TABLE bridge.kyc (
    player_id text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('unverified', 'pending', 'verified', 'rejected',
                                         'expired')),
    provider text NOT NULL DEFAULT '',
    applicant_id text NOT NULL DEFAULT '',
    check_id text NOT NULL DEFAULT '',
    checks_started integer NOT NULL DEFAULT 0,
    birth_date date,
    country text NOT NULL DEFAULT '',
    documents_expire_on date,
    -- A rejected player's own cash may leave after support reviewed them (kyc_history says
    -- who decided and why).
    cash_out_allowed boolean NOT NULL DEFAULT false,
    -- Rejected before: deposits stay refused while a re-check runs.
    was_rejected boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- A provider's check belongs to one player (and is found by it when the answer comes).
CREATE UNIQUE INDEX kyc_check ON bridge.kyc (provider, check_id) WHERE check_id <> '';

CREATE TABLE bridge.kyc_history (
    id bigserial PRIMARY KEY,
    player_id text NOT NULL REFERENCES bridge.kyc (player_id),
    from_state text,
    to_state text NOT NULL,
    source text NOT NULL,  -- api, webhook, support
    actor text NOT NULL,   -- the cashier client, the provider, the support engineer
    note text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kyc_history_player ON bridge.kyc_history (player_id, id);

CREATE TABLE bridge.kyc_events (
    provider text NOT NULL,
    event_key text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    PRIMARY KEY (provider, event_key)
);
