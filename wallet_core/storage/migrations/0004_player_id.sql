-- 0004: every ledger row names its player. Why: scaling out on Citus distributes the ledger
-- by player (docs/SCALING.md): a distributed table's rows must carry the distribution column,
-- and only a statement that names it is routed to one shard, where row locks and a local
-- transaction work as on one Postgres. The hot path's statements therefore say which player
-- they are about, on one Postgres too, so the same code runs on both. Existing rows are filled
-- in from their wallet (or their journal row, for postings) before the column becomes
-- NOT NULL. On one Postgres nothing else changes: the keys and indexes stay as they were.
ALTER TABLE wallet.journal ADD COLUMN player_id text;
UPDATE wallet.journal j SET player_id = w.player_id
FROM wallet.wallets w WHERE w.id = j.wallet_id;
ALTER TABLE wallet.journal ALTER COLUMN player_id SET NOT NULL;

ALTER TABLE wallet.postings ADD COLUMN player_id text;
UPDATE wallet.postings p SET player_id = j.player_id
FROM wallet.journal j WHERE j.id = p.journal_id;
ALTER TABLE wallet.postings ALTER COLUMN player_id SET NOT NULL;

ALTER TABLE wallet.bets ADD COLUMN player_id text;
UPDATE wallet.bets t SET player_id = w.player_id FROM wallet.wallets w WHERE w.id = t.wallet_id;
ALTER TABLE wallet.bets ALTER COLUMN player_id SET NOT NULL;

ALTER TABLE wallet.rounds ADD COLUMN player_id text;
UPDATE wallet.rounds t SET player_id = w.player_id FROM wallet.wallets w WHERE w.id = t.wallet_id;
ALTER TABLE wallet.rounds ALTER COLUMN player_id SET NOT NULL;

ALTER TABLE wallet.bonuses ADD COLUMN player_id text;
UPDATE wallet.bonuses t SET player_id = w.player_id FROM wallet.wallets w WHERE w.id = t.wallet_id;
ALTER TABLE wallet.bonuses ALTER COLUMN player_id SET NOT NULL;

ALTER TABLE wallet.withdrawals ADD COLUMN player_id text;
UPDATE wallet.withdrawals t SET player_id = w.player_id
FROM wallet.wallets w WHERE w.id = t.wallet_id;
ALTER TABLE wallet.withdrawals ALTER COLUMN player_id SET NOT NULL;

ALTER TABLE wallet.rollback_tombstones ADD COLUMN player_id text;
UPDATE wallet.rollback_tombstones t SET player_id = w.player_id
FROM wallet.wallets w WHERE w.id = t.wallet_id;
ALTER TABLE wallet.rollback_tombstones ALTER COLUMN player_id SET NOT NULL;
