-- 0014: the restriction a player's verification calls for in the wallet (docs/COMPLIANCE.md,
-- KYC): under age or resident in a blocked country, bets are refused by the wallet itself.
-- restriction_version counts its changes; the wallet has version restriction_sent_version,
-- and the bridge sends the newer one (the version is in the wallet call's key), trying a
-- player again no sooner than a poll interval after restriction_tried_at.
ALTER TABLE bridge.kyc
    ADD COLUMN restriction text NOT NULL DEFAULT '',
    ADD COLUMN restriction_version integer NOT NULL DEFAULT 0,
    ADD COLUMN restriction_sent_version integer NOT NULL DEFAULT 0,
    ADD COLUMN restriction_tried_at timestamptz;
CREATE INDEX kyc_restriction_unsent ON bridge.kyc (restriction_tried_at NULLS FIRST, player_id)
    WHERE restriction_version > restriction_sent_version;
