"""FX settings: the provider's timeout must fit in the inbox worker's idle-in-transaction
window, and the provider URL (which may carry a key) stays out of repr()."""

from __future__ import annotations

import pytest

from gateway_bridge import config
from tests.bridge.unit.test_config import BASE


def test_fx_timeout_above_the_idle_window_is_refused_naming_the_variable() -> None:
    """30 s is below the request timeout but above max(statement 5 s, wallet 3 s): refused,
    BRIDGE_FX_TIMEOUT_MS named; at the bound it loads."""
    with pytest.raises(config.SettingsError) as err:
        config.load({**BASE, "BRIDGE_FX_TIMEOUT_MS": "20000",
                     "BRIDGE_REQUEST_TIMEOUT_MS": "60000"})
    assert any(p.startswith("BRIDGE_FX_TIMEOUT_MS:") for p in err.value.problems), \
        err.value.problems
    assert config.load({**BASE, "BRIDGE_FX_TIMEOUT_MS": "5000"}).fx.timeout_ms == 5000


def test_fx_rates_url_is_not_in_repr() -> None:
    """A provider URL with an API key in its query is not shown by repr()."""
    url = "https://rates.example/v1?apikey=sekrit-0123456789"
    s = config.load({**BASE, "BRIDGE_FX_RATES_URL": url})
    assert s.fx.rates_url == url
    assert "sekrit-0123456789" not in repr(s)
