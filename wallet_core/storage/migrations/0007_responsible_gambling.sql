-- 0007: responsible-gambling limits and breaks (docs/COMPLIANCE.md) travel with the wallet
-- row, so a bet reads them under the lock it already takes: the limits per kind and period,
-- the raises waiting for their cooling-off, what each limit's period has used, and a
-- time-out or self-exclusion. NULL for a player who set nothing (then nothing is counted).
ALTER TABLE wallet.wallets ADD COLUMN rg jsonb;
