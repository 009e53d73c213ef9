-- 0011: a refund the PSP accepted but has not confirmed yet (Adyen answers "received" and
-- reports the outcome in a REFUND notification): `requested`, settled by that notification.
ALTER TABLE bridge.psp_refunds DROP CONSTRAINT psp_refunds_state_check;
ALTER TABLE bridge.psp_refunds ADD CONSTRAINT psp_refunds_state_check
    CHECK (state IN ('owed', 'requested', 'refunded', 'failed'));
