-- 0013: anti-money-laundering cases (docs/COMPLIANCE.md). A rule's hit opens a case for the
-- player (one open case per player and rule: later hits add their payments); an analyst
-- works it to cleared or reported. Every change is kept in aml_case_history.
CREATE TABLE bridge.aml_cases (
    id bigserial PRIMARY KEY,
    player_id text NOT NULL,
    rule text NOT NULL,
    state text NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'investigating', 'cleared', 'reported')),
    holds_withdrawals boolean NOT NULL,
    detail text NOT NULL,
    payment_ids text[] NOT NULL,
    narrative text NOT NULL DEFAULT '',
    opened_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX aml_cases_open ON bridge.aml_cases (player_id, rule)
    WHERE state IN ('open', 'investigating');
CREATE INDEX aml_cases_state ON bridge.aml_cases (state, id);

CREATE TABLE bridge.aml_case_history (
    id bigserial PRIMARY KEY,
    case_id bigint NOT NULL REFERENCES bridge.aml_cases (id),
    from_state text,
    to_state text NOT NULL,
    actor text NOT NULL,
    note text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX aml_case_history_case ON bridge.aml_case_history (case_id, id);
