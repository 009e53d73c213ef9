-- 0003: withdrawal reversal. Why: a PSP can report a payout as paid and later as failed or
-- returned (Stripe: payout.paid, then payout.failed); the money then comes back from the PSP.
-- A committed withdrawal may therefore become 'reversed'. final_journal_id stays the commit's
-- entry and the reversal's own entry is recorded beside it, so both halves stay traceable.
-- withdrawals_state_check is the name Postgres gave the unnamed column CHECK in 0001; it is
-- re-created under the same name. One ALTER TABLE: one lock and one scan of the table.
ALTER TABLE wallet.withdrawals
    DROP CONSTRAINT withdrawals_state_check,
    ADD COLUMN reversal_journal_id bigint REFERENCES wallet.journal (id),
    ADD COLUMN reversal_reason text,
    ADD CONSTRAINT withdrawals_state_check
        CHECK (state IN ('reserved', 'committed', 'cancelled', 'reversed')),
    ADD CONSTRAINT withdrawals_reversal_check
        CHECK ((state = 'reversed') = (reversal_journal_id IS NOT NULL));
