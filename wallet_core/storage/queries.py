"""Every SQL statement of the wallet, as named constants with $n parameters.

Lock order (deadlock freedom): an operation locks exactly one wallet row (FOR UPDATE) and
nothing else. Bonuses, bets, rounds, withdrawals and tombstones of a wallet are only written
while holding that wallet's lock, so they need no locks of their own. Journal and postings
are append-only; the unique index on (caller, idempotency_key) is the arbiter between two
concurrent requests with the same key.

Distribution (docs/SCALING.md): every ledger row carries its player_id, and each statement in
HOT_PATH, the unary path of money-moving calls, names one player (`player_id = $n` in its
filters, the player's id in the rows it inserts), so on Citus it is routed to that player's
shard. Statements that fan out over players are marked so: batches and group commit (many
players in one transaction), lookups by withdrawal or bonus id, the sweeper, the checker.
"""

JOURNAL_BY_KEY = """
SELECT id, created_at, kind, status, reason, request_hash, outcome
FROM wallet.journal WHERE caller = $1 AND idempotency_key = $2 AND player_id = $3"""

# Fans out: operations named by withdrawal or bonus id do not say their player.
JOURNAL_BY_CALLER_KEY = """
SELECT id, created_at, kind, status, reason, request_hash, outcome
FROM wallet.journal WHERE caller = $1 AND idempotency_key = $2"""

# Fans out (a batch's players). A batch's replays in one round trip: ($1[i], $2[i]) pairs of caller and key.
JOURNAL_BY_KEYS = """
SELECT j.caller, j.idempotency_key, j.id, j.created_at, j.kind, j.status, j.reason,
       j.request_hash, j.outcome
FROM unnest($1::text[], $2::text[]) AS k(caller, idempotency_key)
JOIN wallet.journal j USING (caller, idempotency_key)"""

JOURNAL_BY_ID = """
SELECT id, created_at, kind, status, reason, request_hash, outcome
FROM wallet.journal WHERE id = $1"""

INSTANCE_ID = "SELECT id::text FROM wallet.instance"

LOAD_CURRENCIES = "SELECT code, scale, amount_max_minor FROM wallet.currencies ORDER BY code"

CREATE_WALLET = """
INSERT INTO wallet.wallets (player_id, currency) VALUES ($1, $2)
ON CONFLICT ON CONSTRAINT wallets_player_currency_key DO NOTHING
RETURNING id, cash, bonus, reserved"""

# The wallet's row lock also guards its bonuses, bets, rounds and withdrawals (see above).
LOCK_WALLET = """
SELECT id, cash, bonus, reserved, rg FROM wallet.wallets
WHERE player_id = $1 AND currency = $2 FOR UPDATE"""

# Fans out (a batch's players). Group commit and batches lock every wallet they touch up front, in wallet id order, so two
# batches can't deadlock: by (player, currency), and by id for operations named by withdrawal
# or bonus id ($3, resolved first).
LOCK_WALLETS = """
SELECT w.id, w.player_id, w.currency, w.cash, w.bonus, w.reserved, w.rg
FROM wallet.wallets w
WHERE w.id IN (SELECT x.id FROM wallet.wallets x
               JOIN unnest($1::text[], $2::text[]) AS k(player_id, currency)
                   USING (player_id, currency)
               UNION SELECT unnest($3::bigint[]))
ORDER BY w.id FOR UPDATE OF w"""

# Read after LOCK_WALLETS, in a new statement: its snapshot is taken once the locks are held,
# so it sees every commit that touched these wallets (a subquery of the locking statement
# would not: it keeps the snapshot from before the wait). One round trip brings what the
# batch's operations will read: the wallets' active bonuses ($1), which bets have a rollback
# tombstone ($2, $3, $8: caller, key, player), the rounds its wins settle ($4-$6), a journal id for each of its
# operations in order ($7), and the transaction's time (the journal rows' created_at).
BATCH_READ = """
SELECT ARRAY(SELECT ROW(b.wallet_id, b.id, b.state, b.granted_minor, b.balance_minor,
                        b.wagering_required_minor, b.wagered_minor, b.expires_at,
                        b.created_at)
             FROM wallet.bonuses b
             WHERE b.wallet_id = ANY($1::bigint[]) AND b.state = 'active'
             ORDER BY b.wallet_id, b.created_at, b.id) AS bonuses,
       ARRAY(SELECT ROW(t.caller, t.bet_idempotency_key, t.player_id)
             FROM wallet.rollback_tombstones t
             JOIN unnest($2::text[], $3::text[], $8::text[])
                 AS k(caller, bet_idempotency_key, player_id)
                 USING (player_id, caller, bet_idempotency_key)) AS tombstones,
       ARRAY(SELECT ROW(r.wallet_id, r.game_id, r.round_id, r.staked_cash_minor,
                        r.staked_bonus_minor)
             FROM wallet.rounds r
             JOIN unnest($4::bigint[], $5::text[], $6::text[]) AS k(wallet_id, game_id, round_id)
                 USING (wallet_id, game_id, round_id)) AS stakes,
       ARRAY(SELECT nextval('wallet.journal_id_seq') FROM generate_series(1, $7::int))
           AS journal_ids,
       now() AS at"""

# Responsible gambling (domain.limits). The breaks of a player's wallets, for a wallet opened
# during one; and the other wallets of a player an exclusion also covers, locked in id order.
PLAYER_BREAKS = """
SELECT rg FROM wallet.wallets WHERE player_id = $1 ORDER BY id FOR SHARE"""

# An exclusion's locks: every wallet of the player, in id order (the order batches lock in).
LOCK_PLAYER_WALLETS = """
SELECT id FROM wallet.wallets WHERE player_id = $1 ORDER BY id FOR UPDATE"""

LOCK_OTHER_WALLETS = """
SELECT id, rg FROM wallet.wallets WHERE player_id = $1 AND id <> $2 ORDER BY id FOR UPDATE"""

SET_RG = """
UPDATE wallet.wallets SET rg = $3, updated_at = now() WHERE id = $1 AND player_id = $2"""

LIMITS = """
SELECT rg FROM wallet.wallets WHERE player_id = $1 AND currency = $2"""

LOCK_WALLET_BY_ID = """
SELECT id, player_id, currency, cash, bonus, reserved, rg FROM wallet.wallets
WHERE id = $1 AND player_id = $2 FOR UPDATE"""

ACTIVE_BONUSES = """
SELECT id, state, granted_minor, balance_minor, wagering_required_minor, wagered_minor,
       expires_at, created_at
FROM wallet.bonuses WHERE wallet_id = $1 AND state = 'active' AND player_id = $2
ORDER BY created_at, id"""

# Fans out: a bonus id does not say its player (forfeits and the sweeper are rare).
BONUS_BY_ID = """
SELECT b.id, b.wallet_id, b.player_id, b.state, b.granted_minor, b.balance_minor,
       b.wagering_required_minor, b.wagered_minor, b.expires_at, b.created_at
FROM wallet.bonuses b WHERE b.id = $1"""

BONUSES_BY_IDS = """
SELECT id, state, granted_minor, balance_minor, wagering_required_minor, wagered_minor,
       expires_at, created_at
FROM wallet.bonuses WHERE id = ANY($1::bigint[]) AND player_id = $2
ORDER BY created_at, id"""

LIST_BONUSES = """
SELECT b.id, b.state, b.granted_minor, b.balance_minor, b.wagering_required_minor,
       b.wagered_minor, b.expires_at, b.created_at
FROM wallet.bonuses b JOIN wallet.wallets w ON w.id = b.wallet_id
WHERE w.player_id = $1 AND w.currency = $2 AND ($3 OR b.state = 'active')
ORDER BY b.created_at, b.id"""

# Fans out: the sweeper looks at every player's bonuses.
DUE_BONUSES = """
SELECT id FROM wallet.bonuses WHERE state = 'active' AND expires_at <= now()
ORDER BY expires_at LIMIT $1"""

NEXT_BONUS_ID = "SELECT nextval(pg_get_serial_sequence('wallet.bonuses', 'id'))"
NEXT_WITHDRAWAL_ID = "SELECT nextval(pg_get_serial_sequence('wallet.withdrawals', 'id'))"

INSERT_BONUS = """
INSERT INTO wallet.bonuses (id, wallet_id, state, granted_minor, balance_minor,
    wagering_required_minor, wagered_minor, expires_at, grant_journal_id, player_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""

UPDATE_BONUSES = """
UPDATE wallet.bonuses AS b SET state = u.state, balance_minor = u.balance_minor,
    wagered_minor = u.wagered_minor
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])
    AS u(id, state, balance_minor, wagered_minor)
WHERE b.id = u.id AND b.player_id = $5"""

# One statement writes the journal row, its postings and the wallet's new balances. Inside a
# batch the row takes the id the batch drew for this operation ($18), so journal ids follow
# the order operations were applied in; alone, the next id from the sequence. Each posting's
# currency comes in $19 (NULL: the transaction's, $8; set only for the paid side of a
# converted deposit).
RECORD = """
WITH j AS (
    INSERT INTO wallet.journal (id, caller, idempotency_key, request_hash, kind, status,
                                reason, wallet_id, currency, outcome, details, player_id)
    OVERRIDING SYSTEM VALUE
    VALUES (coalesce($18::bigint, nextval('wallet.journal_id_seq')), $1, $2, $3, $4, $5, $6,
            $7, $8, $9, $10, $17)
    RETURNING id, created_at
), p AS (
    INSERT INTO wallet.postings (journal_id, account, currency, amount_minor, player_id)
    SELECT j.id, u.account, coalesce(u.currency, $8), u.amount_minor, $17
    FROM j, unnest($11::text[], $12::bigint[], $19::text[]) AS u(account, amount_minor, currency)
), w AS (
    UPDATE wallet.wallets SET cash = $13, bonus = $14, reserved = $15,
        rg = CASE WHEN $21 THEN $20::jsonb ELSE rg END, updated_at = now()
    WHERE id = $7 AND player_id = $17 AND $16
)
SELECT id, created_at FROM j"""

# The rows of a batch's set-based operations, written at its end in one statement: journal
# rows under ids drawn by BATCH_READ, their postings, each wallet's final balances, changed
# bonuses, bets and the rounds' added stakes (summed per round, since one statement can't
# update a row twice). A journal row whose key or PSP reference was committed meanwhile by
# another connection is not inserted (ON CONFLICT DO NOTHING) and neither are its postings or
# bet; the ids that were inserted come back, and the caller rolls the whole transaction back
# when any is missing. Fans out (a batch's players); each row carries its player ($39-$42).
# JSON travels as text ($10, $11, $32, $33): asyncpg would take a list
# inside a jsonb[] parameter for a nested array.
FLUSH_BATCH = """
WITH j AS (
    INSERT INTO wallet.journal (id, caller, idempotency_key, request_hash, kind, status,
                                reason, wallet_id, currency, outcome, details, player_id)
    OVERRIDING SYSTEM VALUE
    SELECT u.id, u.caller, u.key, u.request_hash, u.kind, u.status, u.reason, u.wallet_id,
           u.currency, u.outcome::jsonb, u.details::jsonb, u.player_id
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[],
                $7::text[], $8::bigint[], $9::text[], $10::text[], $11::text[], $39::text[])
        AS u(id, caller, key, request_hash, kind, status, reason, wallet_id, currency,
             outcome, details, player_id)
    ON CONFLICT DO NOTHING
    RETURNING id
), p AS (
    INSERT INTO wallet.postings (journal_id, account, currency, amount_minor, player_id)
    SELECT u.journal_id, u.account, u.currency, u.amount_minor, u.player_id
    FROM unnest($12::bigint[], $13::text[], $14::text[], $15::bigint[], $40::text[])
        AS u(journal_id, account, currency, amount_minor, player_id)
    WHERE u.journal_id IN (SELECT id FROM j)
), w AS (
    UPDATE wallet.wallets AS w SET cash = u.cash, bonus = u.bonus, reserved = u.reserved,
        rg = CASE WHEN u.rg_changed THEN u.rg::jsonb ELSE w.rg END, updated_at = now()
    FROM unnest($16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $43::text[],
                $44::bool[])
        AS u(id, cash, bonus, reserved, rg, rg_changed)
    WHERE w.id = u.id
), b AS (
    UPDATE wallet.bonuses AS b SET state = u.state, balance_minor = u.balance_minor,
        wagered_minor = u.wagered_minor
    FROM unnest($20::bigint[], $21::text[], $22::bigint[], $23::bigint[])
        AS u(id, state, balance_minor, wagered_minor)
    WHERE b.id = u.id
), bet AS (
    INSERT INTO wallet.bets (journal_id, wallet_id, caller, idempotency_key, game_id,
                             round_id, cash_minor, bonus_minor, bonus_debits, wagered,
                             player_id)
    SELECT u.journal_id, u.wallet_id, u.caller, u.idempotency_key, u.game_id, u.round_id,
           u.cash_minor, u.bonus_minor, u.bonus_debits::jsonb, u.wagered::jsonb, u.player_id
    FROM unnest($24::bigint[], $25::bigint[], $26::text[], $27::text[], $28::text[],
                $29::text[], $30::bigint[], $31::bigint[], $32::text[], $33::text[],
                $41::text[])
        AS u(journal_id, wallet_id, caller, idempotency_key, game_id, round_id, cash_minor,
             bonus_minor, bonus_debits, wagered, player_id)
    WHERE u.journal_id IN (SELECT id FROM j)
), r AS (
    INSERT INTO wallet.rounds (wallet_id, game_id, round_id, staked_cash_minor,
                               staked_bonus_minor, player_id)
    SELECT * FROM unnest($34::bigint[], $35::text[], $36::text[], $37::bigint[], $38::bigint[],
                         $42::text[])
    ON CONFLICT (wallet_id, game_id, round_id) DO UPDATE
    SET staked_cash_minor = wallet.rounds.staked_cash_minor + EXCLUDED.staked_cash_minor,
        staked_bonus_minor = wallet.rounds.staked_bonus_minor + EXCLUDED.staked_bonus_minor
)
SELECT ARRAY(SELECT id FROM j) AS inserted"""

TOMBSTONE_EXISTS = """
SELECT EXISTS (SELECT 1 FROM wallet.rollback_tombstones
               WHERE caller = $1 AND bet_idempotency_key = $2 AND player_id = $3)"""

INSERT_TOMBSTONE = """
INSERT INTO wallet.rollback_tombstones (caller, bet_idempotency_key, wallet_id, journal_id,
                                        player_id)
VALUES ($1, $2, $3, $4, $5)"""

BET_BY_KEY = """
SELECT journal_id, wallet_id, game_id, round_id, cash_minor, bonus_minor, bonus_debits,
       wagered, rolled_back_by
FROM wallet.bets WHERE caller = $1 AND idempotency_key = $2 AND player_id = $3"""

# Fans out: whether another player holds this bet key (a rollback naming a bet not found).
BET_KEY_TAKEN = """
SELECT EXISTS (SELECT 1 FROM wallet.bets WHERE caller = $1 AND idempotency_key = $2)"""

# The bet row and its round's stake in one statement (one round trip on the hot path).
INSERT_BET = """
WITH bet AS (
    INSERT INTO wallet.bets (journal_id, wallet_id, caller, idempotency_key, game_id,
                             round_id, cash_minor, bonus_minor, bonus_debits, wagered,
                             player_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
)
INSERT INTO wallet.rounds (wallet_id, game_id, round_id, staked_cash_minor, staked_bonus_minor,
                           player_id)
VALUES ($2, $5, $6, $7, $8, $11)
ON CONFLICT (wallet_id, game_id, round_id) DO UPDATE
SET staked_cash_minor = wallet.rounds.staked_cash_minor + EXCLUDED.staked_cash_minor,
    staked_bonus_minor = wallet.rounds.staked_bonus_minor + EXCLUDED.staked_bonus_minor"""

MARK_BET_ROLLED_BACK = """
UPDATE wallet.bets SET rolled_back_by = $2 WHERE journal_id = $1 AND player_id = $3"""

ROUND_STAKE = """
SELECT staked_cash_minor, staked_bonus_minor FROM wallet.rounds
WHERE wallet_id = $1 AND game_id = $2 AND round_id = $3 AND player_id = $4"""

# A plain UPDATE: Postgres checks CHECK constraints on an INSERT's proposed row even when
# ON CONFLICT turns it into an update, so negative deltas can't go through INSERT_BET's upsert.
REMOVE_ROUND_STAKE = """
UPDATE wallet.rounds SET staked_cash_minor = staked_cash_minor - $4,
    staked_bonus_minor = staked_bonus_minor - $5
WHERE wallet_id = $1 AND game_id = $2 AND round_id = $3 AND player_id = $6"""

# Fans out: a withdrawal id does not say its player; the rest of the operation is routed.
WITHDRAWAL_WALLET = "SELECT wallet_id, player_id FROM wallet.withdrawals WHERE id = $1"

WITHDRAWAL = """
SELECT id, wallet_id, amount_minor, psp, state, final_journal_id, reversal_journal_id
FROM wallet.withdrawals WHERE id = $1 AND player_id = $2"""

INSERT_WITHDRAWAL = """
INSERT INTO wallet.withdrawals (id, wallet_id, amount_minor, psp, state, reserve_journal_id,
                                player_id)
VALUES ($1, $2, $3, $4, 'reserved', $5, $6)"""

FINISH_WITHDRAWAL = """
UPDATE wallet.withdrawals SET state = $2, final_journal_id = $3, cancel_reason = $4,
    updated_at = now()
WHERE id = $1 AND state = 'reserved' AND player_id = $5"""

# Only a committed withdrawal is reversed; final_journal_id keeps pointing at the commit.
REVERSE_WITHDRAWAL = """
UPDATE wallet.withdrawals SET state = 'reversed', reversal_journal_id = $2,
    reversal_reason = $3, updated_at = now()
WHERE id = $1 AND state = 'committed' AND player_id = $4"""

BALANCE = """
SELECT id, cash, bonus, reserved FROM wallet.wallets WHERE player_id = $1 AND currency = $2"""

_TRANSACTION_SELECT = """
SELECT j.id, j.kind, j.status, j.reason, j.caller, j.idempotency_key, j.created_at,
       j.currency, j.outcome, j.details, w.player_id,
       coalesce((SELECT array_agg(p.account ORDER BY p.account) FROM wallet.postings p
                 WHERE p.journal_id = j.id), '{}') AS accounts,
       coalesce((SELECT array_agg(p.amount_minor ORDER BY p.account) FROM wallet.postings p
                 WHERE p.journal_id = j.id), '{}') AS amounts,
       coalesce((SELECT array_agg(p.currency ORDER BY p.account) FROM wallet.postings p
                 WHERE p.journal_id = j.id), '{}') AS currencies
FROM wallet.journal j LEFT JOIN wallet.wallets w ON w.id = j.wallet_id"""

TRANSACTION_BY_ID = _TRANSACTION_SELECT + " WHERE j.id = $1"

TRANSACTION_ID_BY_KEY = """
SELECT id FROM wallet.journal WHERE caller = $1 AND idempotency_key = $2"""

# Keyset paging on the journal id: stable while new rows arrive (they sort before the page).
LIST_TRANSACTIONS = _TRANSACTION_SELECT + """
WHERE j.wallet_id = $1 AND j.id < $2 ORDER BY j.id DESC LIMIT $3"""

# -- ledger checker (wallet-core check) -------------------------------------------------------
# Each query returns the rows that break one invariant; an empty result means it holds.

CHECK_CURRENCY_SUMS = """
SELECT currency, sum(amount_minor) AS total FROM wallet.postings
GROUP BY currency HAVING sum(amount_minor) <> 0"""

CHECK_UNBALANCED_JOURNAL = """
SELECT journal_id, currency, sum(amount_minor) AS total FROM wallet.postings
GROUP BY journal_id, currency HAVING sum(amount_minor) <> 0 ORDER BY journal_id LIMIT 100"""

CHECK_REJECTED_WITH_POSTINGS = """
SELECT DISTINCT j.id FROM wallet.journal j JOIN wallet.postings p ON p.journal_id = j.id
WHERE j.status = 'rejected' ORDER BY j.id LIMIT 100"""

# A posting is in its transaction's currency, or, for a converted deposit only, in the paid
# currency its details name, on a system account (never a player bucket). With
# CHECK_UNBALANCED_JOURNAL (per journal and currency) a conversion therefore balances in
# exactly its two currencies.
CHECK_POSTING_CURRENCY = """
SELECT p.journal_id, p.account, p.currency FROM wallet.postings p
JOIN wallet.journal j ON j.id = p.journal_id
WHERE p.currency IS DISTINCT FROM j.currency
  AND NOT (j.kind = 'deposit' AND p.account NOT LIKE 'player:%'
           AND p.currency = j.details ->> 'fx_paid_currency'
           AND j.currency IS DISTINCT FROM j.details ->> 'fx_paid_currency')
ORDER BY p.journal_id LIMIT 100"""

# A converted deposit moved exactly the paid amount its details record into the FX desk, in
# the paid currency (the record and the postings tell the same story).
CHECK_CONVERSIONS = """
SELECT j.id, j.details ->> 'fx_paid_currency' AS paid_currency,
       j.details ->> 'fx_paid_minor' AS recorded, coalesce(sum(p.amount_minor), 0) AS posted
FROM wallet.journal j
LEFT JOIN wallet.postings p ON p.journal_id = j.id AND p.amount_minor > 0
    AND p.currency = j.details ->> 'fx_paid_currency'
WHERE j.kind = 'deposit' AND j.status = 'ok' AND j.details ? 'fx_paid_currency'
GROUP BY j.id
HAVING (j.details ->> 'fx_paid_minor') !~ '^[0-9]{1,19}$'
    OR coalesce(sum(p.amount_minor), 0) <> CASE
           WHEN (j.details ->> 'fx_paid_minor') ~ '^[0-9]{1,19}$'
           THEN (j.details ->> 'fx_paid_minor')::numeric END
ORDER BY j.id LIMIT 100"""

# Sums keyed by (wallet id, bucket) parsed from the account name: an equi-join Postgres can
# hash (joining on a built string ran a nested loop, minutes on a load-test ledger).
CHECK_BUCKETS_VS_POSTINGS = """
WITH sums AS (
    SELECT CASE WHEN account ~ '^player:[0-9]{1,18}:' THEN split_part(account, ':', 2)::bigint
           END AS wallet_id,
           split_part(account, ':', 3) AS bucket, sum(amount_minor) AS total
    FROM wallet.postings WHERE account LIKE 'player:%' GROUP BY 1, 2
)
SELECT w.id, w.player_id, w.currency, b.bucket, b.balance, coalesce(s.total, 0) AS posted
FROM wallet.wallets w
CROSS JOIN LATERAL (VALUES ('cash', w.cash), ('bonus', w.bonus), ('reserved', w.reserved))
    AS b(bucket, balance)
LEFT JOIN sums s ON s.wallet_id = w.id AND s.bucket = b.bucket
WHERE b.balance <> coalesce(s.total, 0) ORDER BY w.id LIMIT 100"""

# The wallet id is parsed out of the account (CASE keeps the cast away from malformed
# names), so this is an equi-join Postgres can hash, not a LIKE per (posting, wallet) pair.
CHECK_ORPHAN_PLAYER_POSTINGS = """
SELECT DISTINCT p.account FROM wallet.postings p
LEFT JOIN wallet.wallets w
    ON w.id = CASE WHEN p.account ~ '^player:[0-9]{1,18}:' THEN split_part(p.account, ':', 2)::bigint END
WHERE p.account LIKE 'player:%' AND (w.id IS NULL OR w.currency <> p.currency) LIMIT 100"""

CHECK_NEGATIVE_BUCKETS = """
SELECT w.id, w.player_id, w.currency, w.cash, w.bonus, w.reserved, w.rg
FROM wallet.wallets w
WHERE w.bonus < 0 OR w.reserved < 0
   OR (w.cash < 0 AND NOT EXISTS (SELECT 1 FROM wallet.journal j WHERE j.wallet_id = w.id
                                  AND j.kind = 'chargeback' AND j.status = 'ok'))
ORDER BY w.id LIMIT 100"""

CHECK_BONUS_BUCKET = """
SELECT w.id, w.player_id, w.currency, w.bonus, coalesce(sum(b.balance_minor), 0) AS held
FROM wallet.wallets w LEFT JOIN wallet.bonuses b ON b.wallet_id = w.id AND b.state = 'active'
GROUP BY w.id HAVING w.bonus <> coalesce(sum(b.balance_minor), 0) ORDER BY w.id LIMIT 100"""

CHECK_RESERVED_BUCKET = """
SELECT w.id, w.player_id, w.currency, w.reserved, coalesce(sum(x.amount_minor), 0) AS held
FROM wallet.wallets w
LEFT JOIN wallet.withdrawals x ON x.wallet_id = w.id AND x.state = 'reserved'
GROUP BY w.id HAVING w.reserved <> coalesce(sum(x.amount_minor), 0) ORDER BY w.id LIMIT 100"""


# The unary path of every money-moving call: each names one player (see the module docstring;
# tests/wallet/integration/test_distribution.py holds them to it).
HOT_PATH = {
    "JOURNAL_BY_KEY": JOURNAL_BY_KEY, "CREATE_WALLET": CREATE_WALLET,
    "LOCK_WALLET": LOCK_WALLET, "LOCK_WALLET_BY_ID": LOCK_WALLET_BY_ID,
    "ACTIVE_BONUSES": ACTIVE_BONUSES, "BONUSES_BY_IDS": BONUSES_BY_IDS,
    "INSERT_BONUS": INSERT_BONUS, "UPDATE_BONUSES": UPDATE_BONUSES, "RECORD": RECORD,
    "TOMBSTONE_EXISTS": TOMBSTONE_EXISTS, "INSERT_TOMBSTONE": INSERT_TOMBSTONE,
    "BET_BY_KEY": BET_BY_KEY, "INSERT_BET": INSERT_BET,
    "MARK_BET_ROLLED_BACK": MARK_BET_ROLLED_BACK, "ROUND_STAKE": ROUND_STAKE,
    "REMOVE_ROUND_STAKE": REMOVE_ROUND_STAKE, "WITHDRAWAL": WITHDRAWAL,
    "INSERT_WITHDRAWAL": INSERT_WITHDRAWAL, "FINISH_WITHDRAWAL": FINISH_WITHDRAWAL,
    "REVERSE_WITHDRAWAL": REVERSE_WITHDRAWAL, "PLAYER_BREAKS": PLAYER_BREAKS,
    "LOCK_OTHER_WALLETS": LOCK_OTHER_WALLETS, "SET_RG": SET_RG,
    "LOCK_PLAYER_WALLETS": LOCK_PLAYER_WALLETS,
}
