-- 0010: refunds the bridge owes at a PSP a routed payment left (docs/ROUTING.md, "Late
-- captures"): that PSP captured the payment after it cascaded elsewhere, and the wallet was
-- credited by the other PSP. The inbox records the debt in the same transaction as it
-- ignores the capture; the refund worker pays it back and keeps the outcome.
CREATE TABLE bridge.psp_refunds (
    id bigserial PRIMARY KEY,
    payment_id text NOT NULL REFERENCES bridge.payments (id),
    psp text NOT NULL,
    -- The capture at that PSP (Stripe's payment intent, Adyen's payment pspReference).
    psp_reference text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    state text NOT NULL DEFAULT 'owed' CHECK (state IN ('owed', 'refunded', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    refund_reference text,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (psp, psp_reference)
);
CREATE INDEX psp_refunds_due ON bridge.psp_refunds (next_attempt_at) WHERE state = 'owed';
