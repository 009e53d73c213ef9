"""What the HTTP handlers reach: the running bridge's services, stored on the app."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from gateway_bridge.config import Settings
from gateway_bridge.incidents.rejections import RejectionLog
from gateway_bridge.kyc.service import KycService
from gateway_bridge.payments.cashier import Payments
from gateway_bridge.payments.inbox import Inbox
from gateway_bridge.payments.status_sync import StatusSync
from gateway_bridge.psp.base import PspAdapter


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    rejections: RejectionLog
    payments: Payments
    inbox: Inbox
    sync: StatusSync
    adapters: Mapping[str, PspAdapter]
    clients_by_key_sha256: Mapping[bytes, str] = field(repr=False)
    kyc: KycService | None = None  # identity verification (docs/COMPLIANCE.md)
    # (psp, cause) -> webhooks rejected since start, and those not yet added to the lasting
    # count in the database (flushed in the background: forged traffic causes no writes).
    rejected_total: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected_unsaved: Counter[tuple[str, str]] = field(default_factory=Counter)


SERVICES = web.AppKey("services", Services)
REQUEST_ID = web.RequestKey("request_id", str)
