-- 0002: where a payout goes, in its own column. Why: the destination (an account token or a
-- crypto address) is needed only until the PSP accepts the payout; keeping it apart from the
-- stored request lets the bridge erase it then, while the request keeps only its digest for
-- matching a retried cashier call. Rows stored before this kept the destination in the
-- request; they are moved here and the request gets the digest.
ALTER TABLE bridge.payments ADD COLUMN payout_destination text;

UPDATE bridge.payments
SET payout_destination = CASE WHEN state IN ('requested', 'reserved')
                              THEN request ->> 'destination' END,
    request = jsonb_set(request, '{destination}',
                        to_jsonb(encode(sha256(convert_to(request ->> 'destination', 'UTF8')),
                                        'hex')))
WHERE direction = 'withdrawal' AND request ? 'destination';
