"""Build hook of the wallet-client wheel: the wallet.v1 code generated from the repository's
protos/ with the same generator as the main package (../../hatch_build.py)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

REPO_ROOT = Path(__file__).resolve().parents[2]


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        spec = importlib.util.spec_from_file_location("repo_hatch_build",
                                                      REPO_ROOT / "hatch_build.py")
        assert spec is not None and spec.loader is not None
        repo_build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(repo_build)
        out_dir = Path(tempfile.mkdtemp(prefix="wallet-client-gen-"))
        repo_build.generate(REPO_ROOT, out_dir)
        build_data["force_include"][str(out_dir / "wallet")] = "wallet"
