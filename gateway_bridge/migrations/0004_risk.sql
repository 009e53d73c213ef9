-- 0004: fraud and risk decisions. Why: every deposit and withdrawal is screened by rules
-- (velocity, amount, shared instruments, wagering, country/currency, an external score)
-- before anything leaves the bridge; each decision with every rule's result is kept for
-- audit and metrics, the velocity rules count earlier attempts from here (by player and by
-- payment instrument), and payments held for review wait here until support approves or
-- rejects them, each step recorded with who, when and why.
CREATE TABLE bridge.risk_decisions (
    payment_id    text PRIMARY KEY REFERENCES bridge.payments (id),
    direction     text NOT NULL CHECK (direction IN ('deposit', 'withdrawal')),
    player_id     text NOT NULL,
    currency      text NOT NULL,
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    -- card fingerprint, crypto address, IBAN-like id: whatever the cashier sent; NULL: none
    instrument_id text,
    country       text,
    decision      text NOT NULL CHECK (decision IN ('allow', 'review', 'deny')),
    -- [{code, outcome, message}, ...]: every rule that applied, fired or not
    rules         jsonb NOT NULL,
    -- the external score, or why the scorer failed; NULL: no scorer configured
    scoring       jsonb,
    decided_at    timestamptz NOT NULL DEFAULT now(),
    -- A review waits as 'pending' until support approves or rejects it.
    review_status text CHECK (review_status IN ('pending', 'approved', 'rejected')),
    reviewed_by   text,
    reviewed_at   timestamptz,
    review_reason text,
    CHECK ((decision = 'review') = (review_status IS NOT NULL))
);
CREATE INDEX risk_decisions_player ON bridge.risk_decisions (player_id, direction, decided_at);
CREATE INDEX risk_decisions_instrument ON bridge.risk_decisions (instrument_id, decided_at)
    WHERE instrument_id IS NOT NULL;
CREATE INDEX risk_decisions_pending ON bridge.risk_decisions (decided_at)
    WHERE review_status = 'pending';

-- Append-only: each approval or rejection support made that was accepted, repeats of the
-- same verdict included (the decision row above holds the final word).
CREATE TABLE bridge.risk_review_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id text NOT NULL REFERENCES bridge.risk_decisions (payment_id),
    action     text NOT NULL CHECK (action IN ('approve', 'reject')),
    actor      text NOT NULL,
    reason     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX risk_review_log_payment ON bridge.risk_review_log (payment_id, id);
