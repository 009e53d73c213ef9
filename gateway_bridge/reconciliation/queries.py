"""Every SQL statement of reconciliation, as named constants with $n parameters.

Reads of our side run in one REPEATABLE READ, READ ONLY transaction, so the bridge's payments
and the wallet's journal are seen at one instant. The wallet's tables are only read, never
written: the wallet stays the one writer of its ledger. Writes touch only the recon_* tables.
Column lists are written out in each statement (no f-strings), so every constant is a plain
literal.
"""

# $2: every reference the report's lines carry (our ids and the PSP's references).
PAYMENTS_BY_REFERENCE = """
SELECT id, direction, state, currency, amount_minor, charged_back_minor, psp_reference,
       psp_reference_alt, withdrawal_id, created_at FROM bridge.payments
WHERE psp = $1
  AND (id = ANY($2::text[]) OR psp_reference = ANY($2::text[])
       OR psp_reference_alt = ANY($2::text[]))"""

# Payments the PSP should report: created in [$2, $3) in one of the states $4. $5 bounds it.
PAYMENTS_IN_PERIOD = """
SELECT id, direction, state, currency, amount_minor, charged_back_minor, psp_reference,
       psp_reference_alt, withdrawal_id, created_at FROM bridge.payments
WHERE psp = $1 AND created_at >= $2 AND created_at < $3 AND state = ANY($4::text[])
ORDER BY created_at, id LIMIT $5"""

# What the wallet credited per payment: the bridge's deposits carry our payment id as the
# psp_reference (unique per (kind, psp, psp_reference) for ok entries).
WALLET_DEPOSITS = """
SELECT j.details ->> 'psp_reference' AS payment_id, -p.amount_minor AS amount_minor
FROM wallet.journal j
JOIN wallet.postings p ON p.journal_id = j.id AND p.account = 'psp:' || $1::text
WHERE j.kind = 'deposit' AND j.status = 'ok' AND j.details ->> 'psp' = $1::text
  AND j.details ->> 'psp_reference' = ANY($2::text[])"""

# What the wallet paid out per withdrawal: committed (or committed, then reversed).
WALLET_WITHDRAWALS = """
SELECT w.id, w.state, w.amount_minor
FROM wallet.withdrawals w
JOIN wallet.journal j ON j.id = w.final_journal_id
WHERE w.id = ANY($1::bigint[]) AND w.state IN ('committed', 'reversed')
  AND j.kind = 'withdrawal_commit' AND j.status = 'ok'"""

# A concurrent import of the same report waits on the unique key, then finds it stored.
INSERT_IMPORT = """
INSERT INTO bridge.recon_imports (report_sha256, psp, layout, period_from, period_to,
                                  lines_read, counts)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (report_sha256) DO NOTHING
RETURNING id, report_sha256, psp, layout, period_from, period_to, lines_read, counts,
          imported_at"""

IMPORT_BY_SHA256 = """
SELECT id, report_sha256, psp, layout, period_from, period_to, lines_read, counts, imported_at
FROM bridge.recon_imports WHERE report_sha256 = $1"""

INSERT_FINDING = """
INSERT INTO bridge.recon_findings (import_id, seq, kind, line_no, payment_id, psp_reference,
                                   psp_type, currency, report_amount_minor, our_amount_minor,
                                   settlement_currency, fee_minor, net_minor, our_state, note)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"""

FINDINGS = """
SELECT kind, line_no, payment_id, psp_reference, psp_type, currency, report_amount_minor,
       our_amount_minor, settlement_currency, fee_minor, net_minor, our_state, note
FROM bridge.recon_findings WHERE import_id = $1 ORDER BY seq"""
