-- 0005: incidents. Why: support runs a process (DESIGN.md §11: detection -> diagnostics ->
-- correction -> validation -> report) and needs each incident as a record that outlives a
-- restart and is the same for every bridge replica: what the detection rule saw, the
-- payments and players it touches, the money at risk, and a timeline of what was seen and
-- done by whom. The detection rules need two signals no table kept over time until now:
-- webhook rejections per minute (the running totals in webhook_rejections have no window)
-- and the PSP health probes' results. Support may also settle a stuck payment by hand, which
-- goes through the inbox like any answer, so the inbox learns a fourth source.

CREATE TABLE bridge.incidents (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- failed_deposits, delayed_withdrawals, callback_errors, currency_mismatch,
    -- transaction_timeout, gateway_downtime (gateway_bridge/incidents/rules.py)
    rule           text NOT NULL,
    -- what the rule was evaluated for: "<psp>" or "<psp>/<method>"
    scope          text NOT NULL,
    psp            text NOT NULL,
    stage          text NOT NULL DEFAULT 'detected'
                   CHECK (stage IN ('detected', 'diagnosing', 'correcting', 'validating',
                                    'resolved')),
    summary        text NOT NULL,
    -- the last measurement that fired (counts, ratios, thresholds), for the report
    observed       jsonb NOT NULL,
    detected_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    -- set while the condition no longer holds; cleared when it comes back
    cleared_at     timestamptz,
    acknowledged_by text,
    acknowledged_at timestamptz,
    resolved_by    text,
    resolved_at    timestamptz,
    cause          text,
    resolution     text,
    -- resolved by force while the condition still held: no new incident for this rule and
    -- scope until the condition has cleared once (support already decided about it)
    quiet_until_clear boolean NOT NULL DEFAULT false,
    CHECK ((stage = 'resolved') = (resolved_at IS NOT NULL))
);
-- One open incident per rule and scope, whichever replica's detector saw it first.
CREATE UNIQUE INDEX incidents_open_key ON bridge.incidents (rule, scope)
    WHERE stage <> 'resolved';
CREATE INDEX incidents_detected ON bridge.incidents (detected_at);

CREATE TABLE bridge.incident_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES bridge.incidents (id),
    at          timestamptz NOT NULL DEFAULT now(),
    -- detected, observed, cleared, returned, stage, note, action
    kind        text NOT NULL,
    -- "detector" or the person who did it
    actor       text NOT NULL,
    text        text NOT NULL,
    data        jsonb
);
CREATE INDEX incident_events_incident ON bridge.incident_events (incident_id, id);

-- Payments an incident touches; amounts copied so money at risk stays as it was seen even
-- after the payment moves on.
CREATE TABLE bridge.incident_payments (
    incident_id  bigint NOT NULL REFERENCES bridge.incidents (id),
    payment_id   text NOT NULL REFERENCES bridge.payments (id),
    player_id    text NOT NULL,
    currency     text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    state        text NOT NULL,
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, payment_id)
);
CREATE INDEX incident_payments_payment ON bridge.incident_payments (payment_id);

-- Webhook rejections per PSP, cause and minute: the callback-error rule's window.
CREATE TABLE bridge.webhook_rejections_by_minute (
    psp    text NOT NULL,
    cause  text NOT NULL,
    minute timestamptz NOT NULL,
    count  bigint NOT NULL CHECK (count > 0),
    PRIMARY KEY (psp, minute, cause)
);
CREATE INDEX webhook_rejections_by_minute_minute ON bridge.webhook_rejections_by_minute (minute);

-- Each PSP health probe's result: the gateway-downtime rule looks at the last few.
CREATE TABLE bridge.psp_probes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    psp         text NOT NULL,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    up          boolean NOT NULL,
    status      integer,
    reason      text NOT NULL DEFAULT '',
    duration_ms integer NOT NULL CHECK (duration_ms >= 0)
);
CREATE INDEX psp_probes_recent ON bridge.psp_probes (psp, checked_at DESC);
CREATE INDEX psp_probes_checked ON bridge.psp_probes (checked_at);

-- The rules read recent payments by creation and update time across PSPs.
CREATE INDEX payments_created ON bridge.payments (created_at);
CREATE INDEX payments_open_updated ON bridge.payments (state, updated_at);
-- The callback-error rule counts settled events that matched no payment, by time.
CREATE INDEX inbox_settled_unmatched ON bridge.inbox (processed_at)
    WHERE status IN ('ignored', 'dead');

ALTER TABLE bridge.inbox DROP CONSTRAINT inbox_source_check;
ALTER TABLE bridge.inbox ADD CONSTRAINT inbox_source_check
    CHECK (source IN ('webhook', 'poll', 'bridge', 'support'));
