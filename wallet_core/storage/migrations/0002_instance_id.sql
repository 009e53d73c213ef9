-- 0002: a random identity per ledger database. Why: Redis cache keys are namespaced with it,
-- so a recreated database (whose ids start again at 1) can never be answered from cache
-- entries that belong to another database sharing the same Redis.
CREATE TABLE wallet.instance (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO wallet.instance DEFAULT VALUES;
