"""The versions a release names agree with the CHANGELOG's latest entry (CHANGELOG.md)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

import wallet_client

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


def _latest_release() -> str:
    found = re.search(r"^## (\d+\.\d+\.\d+) \(", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert found, "CHANGELOG.md has no release entry"
    return found.group(1)


def test_every_version_is_the_latest_release() -> None:
    latest = _latest_release()
    platform = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    openapi = json.loads((ROOT / "gateway_bridge/http/openapi.json").read_text())
    baseline = (ROOT / "protos/baseline/README.md").read_text()
    assert {"wallet_client": wallet_client.__version__, "pyproject": platform,
            "openapi": openapi["info"]["version"]} == dict.fromkeys(
        ("wallet_client", "pyproject", "openapi"), latest)
    assert f"released in API version {latest}." in baseline, \
        "the buf baseline is not the latest release: scripts/proto-release.sh " + latest
