"""Which adapter class serves which PSP name: the one place a new PSP module is added."""

from __future__ import annotations

from collections.abc import Mapping

from gateway_bridge.psp.adyen import AdyenAdapter
from gateway_bridge.psp.base import PspAdapter, PspConfig
from gateway_bridge.psp.nowpayments import NowPaymentsAdapter
from gateway_bridge.psp.stripe import StripeAdapter

ADAPTERS: dict[str, type[StripeAdapter] | type[AdyenAdapter] | type[NowPaymentsAdapter]] = {
    "stripe": StripeAdapter,
    "adyen": AdyenAdapter,
    "nowpayments": NowPaymentsAdapter,
}


def build_adapters(configs: Mapping[str, PspConfig]) -> dict[str, PspAdapter]:
    return {name: ADAPTERS[name](config) for name, config in configs.items()}
