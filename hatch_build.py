"""Build hook: generate the gRPC/protobuf Python code from protos/ at install time.

Generated code is never committed (gen/ is ignored by git). Every `pip install` (wheel or
editable) regenerates it from the .proto files, and tests/project/test_project_rules.py
regenerates into a temporary folder and compares, so a stale or hand-edited copy cannot slip
through.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

PROTO_ROOT = "protos"
GENERATED_ROOT = "gen"


def proto_files(root: Path) -> list[Path]:
    return sorted((root / PROTO_ROOT).rglob("*.proto"))


def generate(root: Path, out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over every proto; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc  # build requirement, imported only when generating

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = proto_files(root)
    if not protos:
        raise RuntimeError(f"no .proto files under {root / PROTO_ROOT}")
    args = [
        "grpc_tools.protoc",
        f"-I{root / PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    # protoc writes modules only; make every folder an importable package.
    for folder in [out_dir, *[p for p in out_dir.rglob("*") if p.is_dir()]]:
        if folder != out_dir:
            (folder / "__init__.py").touch()
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported by tests without hatchling installed
    BuildHookInterface = object  # type: ignore[assignment,misc]


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        out_dir = root / GENERATED_ROOT
        shutil.rmtree(out_dir, ignore_errors=True)
        generate(root, out_dir)
        if version != "editable":
            for package in [p for p in out_dir.iterdir() if p.is_dir()]:
                build_data["force_include"][str(package)] = package.name
        print(f"generated gRPC code from {PROTO_ROOT}/ into {out_dir}", file=sys.stderr)
