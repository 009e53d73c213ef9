-- 0003: reconciliation of PSP settlement reports. Why: finance imports each PSP's report and
-- support works through what differs from our records; both need to see later what a report
-- said and what was found, and importing the same file again must not count it twice. An
-- import is therefore keyed by the SHA-256 of the report's bytes (a repeat finds the stored
-- import and its findings), and each finding is kept with the line it came from. The index on
-- payments by (psp, created_at) serves the "our payments in the report's period" read.
CREATE TABLE bridge.recon_imports (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    report_sha256 text NOT NULL UNIQUE CHECK (report_sha256 ~ '^[0-9a-f]{64}$'),
    psp           text NOT NULL,
    layout        text NOT NULL,
    period_from   timestamptz NOT NULL,
    period_to     timestamptz NOT NULL,
    lines_read    integer NOT NULL CHECK (lines_read >= 0),
    -- findings per kind, e.g. {"matched": 10, "amount_difference": 1}
    counts        jsonb NOT NULL,
    imported_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (period_to > period_from)
);

CREATE TABLE bridge.recon_findings (
    import_id           bigint NOT NULL REFERENCES bridge.recon_imports (id),
    seq                 integer NOT NULL CHECK (seq >= 0),
    kind                text NOT NULL CHECK (kind IN ('matched', 'missing_ours', 'missing_psp',
                            'amount_difference', 'currency_difference', 'status_difference',
                            'fee')),
    -- the report line (1 = header); NULL for missing_psp, which no line stands for
    line_no             integer CHECK (line_no > 1),
    payment_id          text,
    psp_reference       text NOT NULL,
    psp_type            text NOT NULL,
    currency            text NOT NULL,
    report_amount_minor bigint,
    our_amount_minor    bigint,
    settlement_currency text NOT NULL,
    fee_minor           bigint NOT NULL,
    net_minor           bigint NOT NULL,
    our_state           text,
    note                text NOT NULL,
    PRIMARY KEY (import_id, seq),
    CHECK ((kind = 'missing_psp') = (line_no IS NULL))
);
CREATE INDEX recon_findings_payment ON bridge.recon_findings (payment_id)
    WHERE payment_id IS NOT NULL;

CREATE INDEX payments_psp_created ON bridge.payments (psp, created_at);
