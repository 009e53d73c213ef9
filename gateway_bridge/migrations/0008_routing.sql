-- 0008: PSP routing (docs/ROUTING.md). Why: the bridge picks the PSP most likely to succeed
-- from its own outcomes, and every replica must learn the same rates, so the evidence lives
-- here, not in a process.
--
-- routing_tallies: per (psp, method, currency), successes and failures that fade with age.
-- `at` is when they were last faded; a new outcome fades them to now and adds itself in one
-- statement (queries.RECORD_OUTCOME), so concurrent replicas never lose an outcome.
CREATE TABLE bridge.routing_tallies (
    psp        text NOT NULL,
    method     text NOT NULL,
    currency   text NOT NULL,
    successes  double precision NOT NULL DEFAULT 0 CHECK (successes >= 0),
    failures   double precision NOT NULL DEFAULT 0 CHECK (failures >= 0),
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (psp, method, currency)
);
