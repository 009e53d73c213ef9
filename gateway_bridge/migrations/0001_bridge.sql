-- 0001: the bridge's own tables, in their own schema next to the wallet's. Why: the bridge
-- must remember every payment it started (to match PSP events against what we asked for),
-- every verified webhook before it acknowledges it (inbox first: a crash after the 2xx loses
-- nothing), and each payment's history so support can see what happened and when.
CREATE SCHEMA IF NOT EXISTS bridge;

CREATE TABLE bridge.payments (
    id                 text PRIMARY KEY CHECK (id ~ '^pay_[0-9a-f]{24}$'),
    direction          text NOT NULL CHECK (direction IN ('deposit', 'withdrawal')),
    state              text NOT NULL,
    psp                text NOT NULL,
    method             text NOT NULL,
    player_id          text NOT NULL,
    currency           text NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    -- Money the wallet actually moved for this payment (credited, or paid out), and charged back.
    settled_minor      bigint NOT NULL DEFAULT 0 CHECK (settled_minor >= 0),
    charged_back_minor bigint NOT NULL DEFAULT 0 CHECK (charged_back_minor >= 0),
    psp_reference      text,
    psp_reference_alt  text,
    withdrawal_id      text,
    -- The cashier client and its Idempotency-Key: a retried POST finds this row again.
    client             text NOT NULL,
    client_key         text NOT NULL,
    request            jsonb NOT NULL,
    instructions       jsonb,
    -- Why the wallet refused a withdrawal, so a retried request gets the same answer.
    refusal            jsonb,
    -- Why support should look at this payment (mismatch, partial, timeout, conflict).
    attention          text,
    sync_attempts      integer NOT NULL DEFAULT 0,
    next_sync_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client, client_key)
);
CREATE UNIQUE INDEX payments_psp_reference_key ON bridge.payments (psp, psp_reference)
    WHERE psp_reference IS NOT NULL;
CREATE INDEX payments_psp_reference_alt ON bridge.payments (psp, psp_reference_alt)
    WHERE psp_reference_alt IS NOT NULL;
CREATE INDEX payments_sync_due ON bridge.payments (next_sync_at)
    WHERE next_sync_at IS NOT NULL;
CREATE INDEX payments_player ON bridge.payments (player_id, created_at);
CREATE INDEX payments_attention ON bridge.payments (updated_at) WHERE attention IS NOT NULL;

CREATE TABLE bridge.payment_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id  text NOT NULL REFERENCES bridge.payments (id),
    at          timestamptz NOT NULL DEFAULT now(),
    from_state  text,
    to_state    text NOT NULL,
    -- api (cashier request), webhook, poll (status sync), worker, support
    source      text NOT NULL,
    psp_event_type text,
    inbox_id    bigint,
    note        text NOT NULL
);
CREATE INDEX payment_history_payment ON bridge.payment_history (payment_id, id);

-- Verified PSP events, one row per (psp, event identity). Workers claim due rows with
-- FOR UPDATE SKIP LOCKED; `dead` rows wait for support to replay them.
CREATE TABLE bridge.inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    psp             text NOT NULL,
    event_key       text NOT NULL,
    -- webhook; poll (status sync); bridge (what the bridge learnt itself, e.g. a PSP's
    -- synchronous refusal of a payout)
    source          text NOT NULL CHECK (source IN ('webhook', 'poll', 'bridge')),
    kind            text NOT NULL,
    psp_event_type  text NOT NULL,
    payment_id      text,
    psp_reference   text,
    event           jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'applied', 'ignored', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    UNIQUE (psp, event_key)
);
CREATE INDEX inbox_due ON bridge.inbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX inbox_dead ON bridge.inbox (id) WHERE status = 'dead';

-- Webhooks refused before they were trusted: counted, never stored.
CREATE TABLE bridge.webhook_rejections (
    psp          text NOT NULL,
    cause        text NOT NULL,
    count        bigint NOT NULL DEFAULT 0,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (psp, cause)
);
