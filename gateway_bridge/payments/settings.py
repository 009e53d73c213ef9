"""The payments' settings: the inbox workers, the status sync and its schedule, each PSP's
pending limit, and what a crypto partial payment does. Read from BRIDGE_INBOX_*,
BRIDGE_SYNC_*, BRIDGE_<PSP>_PENDING_LIMIT_MS and BRIDGE_CREDIT_PARTIAL_PAYMENTS.

Each default is written once, on its field below; `load` reads it from `_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from service_kit.settings import EnvReader

# A delay of the sync schedule: 10 ms (tests) up to 30 days; at most 20 polls per payment.
SYNC_DELAY_MS_RANGE = (10, 30 * 86_400_000)
SYNC_SCHEDULE_LENGTH_MAX = 20


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    # Inbox: worker tasks, attempts before dead-letter, backoff doubling up to a cap.
    inbox_workers: int = 4
    # About a day of retries at the 5-minute cap: PSPs retry for days, and a wallet outage
    # must not dead-letter everything that arrived during it.
    inbox_attempts_max: int = 300
    inbox_backoff_ms: int = 500
    inbox_backoff_max_ms: int = 300_000
    inbox_poll_ms: int = 500
    # Status sync: how often it looks for due payments, and how many it takes a round.
    sync_interval_ms: int = 1000
    sync_batch_max: int = 50
    # After a PSP's pending limit, poll on this schedule, then `timed_out`: at the limit,
    # then 1 h and 1 day later (docs/ARCHITECTURE.md).
    sync_schedule_ms: tuple[int, ...] = (300_000, 3_600_000, 86_400_000)
    # psp -> how long a deposit may stay pending before the first poll (unset: the
    # schedule's first delay).
    pending_limit_ms: Mapping[str, int] = field(default_factory=dict)
    # Crypto partial payments: credit what arrived (True) or hold for support (False).
    credit_partial_payments: bool = False

    def pending_limit_for(self, psp: str) -> int:
        return self.pending_limit_ms.get(psp, self.sync_schedule_ms[0])


_DEFAULTS = PaymentSettings()


def load(env: Mapping[str, str], r: EnvReader, *, psp_names: Iterable[str]) -> PaymentSettings:
    """The payments' section; a pending limit is read for each enabled PSP in `psp_names`."""
    d = _DEFAULTS
    schedule = _schedule(env, r)
    settings = PaymentSettings(
        inbox_workers=r.integer("BRIDGE_INBOX_WORKERS", d.inbox_workers, low=1, high=64),
        inbox_attempts_max=r.integer("BRIDGE_INBOX_ATTEMPTS_MAX", d.inbox_attempts_max, low=1,
                                     high=10_000),
        inbox_backoff_ms=r.integer("BRIDGE_INBOX_BACKOFF_MS", d.inbox_backoff_ms, low=10,
                                   high=600_000),
        inbox_backoff_max_ms=r.integer("BRIDGE_INBOX_BACKOFF_MAX_MS", d.inbox_backoff_max_ms,
                                       low=10, high=86_400_000),
        inbox_poll_ms=r.integer("BRIDGE_INBOX_POLL_MS", d.inbox_poll_ms, low=10, high=60_000),
        sync_interval_ms=r.integer("BRIDGE_SYNC_INTERVAL_MS", d.sync_interval_ms, low=10,
                                   high=3_600_000),
        sync_batch_max=r.integer("BRIDGE_SYNC_BATCH_MAX", d.sync_batch_max, low=1,
                                 high=10_000),
        sync_schedule_ms=schedule,
        pending_limit_ms={name: r.integer(f"BRIDGE_{name.upper()}_PENDING_LIMIT_MS",
                                          schedule[0], low=SYNC_DELAY_MS_RANGE[0],
                                          high=SYNC_DELAY_MS_RANGE[1])
                          for name in psp_names},
        credit_partial_payments=r.flag("BRIDGE_CREDIT_PARTIAL_PAYMENTS",
                                       d.credit_partial_payments),
    )
    if settings.inbox_backoff_ms > settings.inbox_backoff_max_ms:
        r.problems.append("BRIDGE_INBOX_BACKOFF_MS: larger than BRIDGE_INBOX_BACKOFF_MAX_MS")
    return settings


def _schedule(env: Mapping[str, str], r: EnvReader) -> tuple[int, ...]:
    """BRIDGE_SYNC_SCHEDULE_MS: comma-separated delays in ms; unset, the default schedule."""
    raw = env.get("BRIDGE_SYNC_SCHEDULE_MS", "")
    if not raw:
        return _DEFAULTS.sync_schedule_ms
    try:
        values = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        values = ()
    low, high = SYNC_DELAY_MS_RANGE
    if not values or len(values) > SYNC_SCHEDULE_LENGTH_MAX or any(
            not low <= v <= high for v in values):
        r.problems.append(f"BRIDGE_SYNC_SCHEDULE_MS: 1-{SYNC_SCHEDULE_LENGTH_MAX} "
                          f"comma-separated delays in ms, each {low}..{high}")
        return _DEFAULTS.sync_schedule_ms
    return values
