-- 0006: currency conversion (docs/FX.md). Why: players may pay in a currency other than their
-- wallet's, crypto especially. A converted deposit is one journal row whose postings balance
-- in two currencies (the paid one through psp:<psp> -> fx:<paid>, the wallet's through
-- fx:<wallet> -> cash); the rate, spread, source and rate time are recorded in its details.
-- Nothing in the schema changes for that: postings already carry their own currency, and the
-- checker (queries.CHECK_POSTING_CURRENCY, CHECK_CONVERSIONS) knows the rule.
--
-- What this adds is a currency players pay in: USDC (6 decimals, like USDT). ETH is left out
-- on purpose: at its native 18 decimals (wei) a bigint holds at most ~9.2 ETH, and a
-- truncated scale (e.g. 9, gwei) would refuse or round real on-chain amounts that carry more
-- decimals, which the bridge must never do silently. It needs a wider amount type first.
INSERT INTO wallet.currencies (code, scale, amount_max_minor) VALUES
    ('USDC', 6, 1000000000000000)  -- 1,000,000,000 USDC, as USDT
ON CONFLICT (code) DO NOTHING;
