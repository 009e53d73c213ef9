"""REDIS_URL naming a Redis Cluster (docs/SCALING.md): the nodes it names, and a bad one
refused at start-up with the setting named."""

from __future__ import annotations

import pytest

from tests.helpers import CALLERS_JSON
from wallet_core import config


def test_a_cluster_url_names_its_nodes() -> None:
    assert config.cluster_nodes("redis+cluster://10.0.0.1:7000,10.0.0.2:7001/0") == [
        ("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert config.cluster_nodes("rediss+cluster://redis.internal:6380") == [
        ("redis.internal", 6380)]
    assert config.cluster_nodes("redis://127.0.0.1:6379/0") is None
    assert config.cluster_nodes("redis+cluster://no-port") == []


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://h:0",
                                 "memcached://127.0.0.1:11211"])
def test_a_bad_redis_url_is_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(config.SettingsError) as caught:
        config.load({"DATABASE_URL": "postgresql://127.0.0.1/unused", "REDIS_URL": url,
                     "WALLET_CALLERS": CALLERS_JSON})
    assert "REDIS_URL" in str(caught.value)


def test_a_cluster_url_is_accepted() -> None:
    s = config.load({"DATABASE_URL": "postgresql://127.0.0.1/unused",
                     "REDIS_URL": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                     "WALLET_CALLERS": CALLERS_JSON})
    assert s.redis_url.startswith("redis+cluster://")
