-- 0009: the routing decision a payment was made with (docs/ROUTING.md): its rule, the PSPs
-- in the order to try them with the reasons, and the attempts that cascaded it. NULL for
-- payments made before routing, or while routing is off.
ALTER TABLE bridge.payments ADD COLUMN routing jsonb;
