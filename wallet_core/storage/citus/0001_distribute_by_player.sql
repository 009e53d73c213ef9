-- Citus variant 0001: distribute the ledger by player. Why: past one Postgres, the ledger is
-- spread over Citus workers by player_id (docs/SCALING.md). Every table holding a player's
-- rows is distributed on player_id and co-located with wallet.wallets, so one player's wallet,
-- journal, postings, bets, rounds, bonuses, withdrawals and tombstones share a shard, and a
-- statement naming the player (queries.HOT_PATH) runs on that shard alone, row locks and all.
-- Currencies and the instance id are small and read everywhere: reference tables, copied to
-- every worker. System accounts have no table (their balances are sums of postings), so they
-- need no placement of their own.
--
-- Applied by `wallet-core migrate --citus` after the regular migrations, recorded in
-- wallet_citus.schema_migrations. Requires the citus extension on the coordinator and workers.
--
-- Citus requires every primary key and unique constraint of a distributed table to contain
-- the distribution column, and foreign keys between distributed tables to include it too, so
-- they are rebuilt with player_id first. Two guarantees narrow from "per caller" to "per
-- caller and player": an idempotency key (callers send UUIDs, so two players never share one
-- in practice), and a PSP reference credited once (a deposit's reference belongs to the
-- player it was created for; the bridge also keeps one payment per PSP reference).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database'
            USING HINT = 'CREATE EXTENSION citus; on the coordinator (and workers) first';
    END IF;
END $$;

-- 1. Every foreign key goes first and is rebuilt in step 4, once the tables are placed
--    (Citus checks a foreign key against the placement of both of its tables).
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT c.conrelid::regclass AS tbl, c.conname
        FROM pg_constraint c
        WHERE c.contype = 'f' AND c.connamespace = 'wallet'::regnamespace
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
    END LOOP;
END $$;

-- 2. Keys that contain the distribution column.
ALTER TABLE wallet.wallets DROP CONSTRAINT wallets_pkey,
    ADD CONSTRAINT wallets_pkey PRIMARY KEY (player_id, id);
ALTER TABLE wallet.journal DROP CONSTRAINT journal_pkey,
    ADD CONSTRAINT journal_pkey PRIMARY KEY (player_id, id),
    DROP CONSTRAINT journal_caller_key,
    ADD CONSTRAINT journal_caller_key UNIQUE (player_id, caller, idempotency_key);
DROP INDEX wallet.journal_psp_reference_key;
CREATE UNIQUE INDEX journal_psp_reference_key ON wallet.journal
    (player_id, kind, (details ->> 'psp'), (details ->> 'psp_reference'))
    WHERE status = 'ok' AND kind IN ('deposit', 'chargeback');
ALTER TABLE wallet.postings DROP CONSTRAINT postings_pkey,
    ADD CONSTRAINT postings_pkey PRIMARY KEY (player_id, journal_id, account);
ALTER TABLE wallet.bets DROP CONSTRAINT bets_pkey,
    ADD CONSTRAINT bets_pkey PRIMARY KEY (player_id, journal_id),
    DROP CONSTRAINT bets_caller_key,
    ADD CONSTRAINT bets_caller_key UNIQUE (player_id, caller, idempotency_key);
ALTER TABLE wallet.rounds DROP CONSTRAINT rounds_pkey,
    ADD CONSTRAINT rounds_pkey PRIMARY KEY (player_id, wallet_id, game_id, round_id);
-- (rollback_tombstones has had (player_id, caller, bet_idempotency_key) since 0005.)
ALTER TABLE wallet.bonuses DROP CONSTRAINT bonuses_pkey,
    ADD CONSTRAINT bonuses_pkey PRIMARY KEY (player_id, id);
ALTER TABLE wallet.withdrawals DROP CONSTRAINT withdrawals_pkey,
    ADD CONSTRAINT withdrawals_pkey PRIMARY KEY (player_id, id);

-- 3. Placement: reference tables everywhere, the ledger co-located by player.
SELECT create_reference_table('wallet.currencies');
SELECT create_reference_table('wallet.instance');
SELECT create_distributed_table('wallet.wallets', 'player_id');
SELECT create_distributed_table('wallet.journal', 'player_id', colocate_with => 'wallet.wallets');
SELECT create_distributed_table('wallet.postings', 'player_id', colocate_with => 'wallet.wallets');
SELECT create_distributed_table('wallet.bets', 'player_id', colocate_with => 'wallet.wallets');
SELECT create_distributed_table('wallet.rounds', 'player_id', colocate_with => 'wallet.wallets');
SELECT create_distributed_table('wallet.rollback_tombstones', 'player_id',
                                colocate_with => 'wallet.wallets');
SELECT create_distributed_table('wallet.bonuses', 'player_id', colocate_with => 'wallet.wallets');
SELECT create_distributed_table('wallet.withdrawals', 'player_id',
                                colocate_with => 'wallet.wallets');

-- 4. Foreign keys again: to the currencies reference table as before, and between ledger
--    tables through the player (co-located, so each is checked on its shard).
ALTER TABLE wallet.wallets ADD CONSTRAINT wallets_currency_fkey
    FOREIGN KEY (currency) REFERENCES wallet.currencies (code);
ALTER TABLE wallet.journal ADD CONSTRAINT journal_currency_fkey
    FOREIGN KEY (currency) REFERENCES wallet.currencies (code);
ALTER TABLE wallet.postings ADD CONSTRAINT postings_currency_fkey
    FOREIGN KEY (currency) REFERENCES wallet.currencies (code);
ALTER TABLE wallet.journal ADD CONSTRAINT journal_wallet_fkey
    FOREIGN KEY (player_id, wallet_id) REFERENCES wallet.wallets (player_id, id);
ALTER TABLE wallet.postings ADD CONSTRAINT postings_journal_fkey
    FOREIGN KEY (player_id, journal_id) REFERENCES wallet.journal (player_id, id);
ALTER TABLE wallet.bets ADD CONSTRAINT bets_journal_fkey
    FOREIGN KEY (player_id, journal_id) REFERENCES wallet.journal (player_id, id),
    ADD CONSTRAINT bets_wallet_fkey
    FOREIGN KEY (player_id, wallet_id) REFERENCES wallet.wallets (player_id, id),
    ADD CONSTRAINT bets_rolled_back_by_fkey
    FOREIGN KEY (player_id, rolled_back_by) REFERENCES wallet.journal (player_id, id);
ALTER TABLE wallet.rounds ADD CONSTRAINT rounds_wallet_fkey
    FOREIGN KEY (player_id, wallet_id) REFERENCES wallet.wallets (player_id, id);
ALTER TABLE wallet.rollback_tombstones ADD CONSTRAINT rollback_tombstones_wallet_fkey
    FOREIGN KEY (player_id, wallet_id) REFERENCES wallet.wallets (player_id, id),
    ADD CONSTRAINT rollback_tombstones_journal_fkey
    FOREIGN KEY (player_id, journal_id) REFERENCES wallet.journal (player_id, id);
ALTER TABLE wallet.bonuses ADD CONSTRAINT bonuses_wallet_fkey
    FOREIGN KEY (player_id, wallet_id) REFERENCES wallet.wallets (player_id, id),
    ADD CONSTRAINT bonuses_grant_journal_fkey
    FOREIGN KEY (player_id, grant_journal_id) REFERENCES wallet.journal (player_id, id);
ALTER TABLE wallet.withdrawals ADD CONSTRAINT withdrawals_wallet_fkey
    FOREIGN KEY (player_id, wallet_id) REFERENCES wallet.wallets (player_id, id),
    ADD CONSTRAINT withdrawals_reserve_journal_fkey
    FOREIGN KEY (player_id, reserve_journal_id) REFERENCES wallet.journal (player_id, id),
    ADD CONSTRAINT withdrawals_final_journal_fkey
    FOREIGN KEY (player_id, final_journal_id) REFERENCES wallet.journal (player_id, id),
    ADD CONSTRAINT withdrawals_reversal_journal_fkey
    FOREIGN KEY (player_id, reversal_journal_id) REFERENCES wallet.journal (player_id, id);
