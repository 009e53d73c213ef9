-- 0005: a rollback tombstone belongs to the player the rollback named. Why: since 0004 every
-- path asks "is there a tombstone for this caller, bet key and player", the only question a
-- Citus shard can answer, but the key was still (caller, bet key): a second player's rollback
-- of the same unknown key found no tombstone of its own and then collided with the first
-- player's on insert. With the player in the key, a rollback of an unknown bet refuses that
-- bet for that player only, on one Postgres as on Citus.
ALTER TABLE wallet.rollback_tombstones
    DROP CONSTRAINT rollback_tombstones_pkey,
    ADD CONSTRAINT rollback_tombstones_pkey PRIMARY KEY (player_id, caller, bet_idempotency_key);
