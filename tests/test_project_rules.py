"""Project rules that code review would otherwise have to catch."""

from __future__ import annotations

import ast
import filecmp
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    """gen/ is exactly what protoc makes from protos/ now: no stale or hand-edited copy."""
    sys.path.insert(0, str(ROOT))
    try:
        import hatch_build
    finally:
        sys.path.remove(str(ROOT))
    fresh = hatch_build.generate(ROOT, tmp_path)
    assert fresh, "nothing generated"
    for path in fresh:
        installed = ROOT / "gen" / path.relative_to(tmp_path)
        assert installed.exists(), f"{installed} missing: reinstall (scripts/bootstrap.sh)"
        assert filecmp.cmp(path, installed, shallow=False), (
            f"{installed} differs from protos/: reinstall to regenerate")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_does_no_io_and_imports_no_edge() -> None:
    """wallet_core.domain imports no database, cache, gRPC or other wallet layer."""
    forbidden = re.compile(r"^(asyncpg|redis|grpc|grpc_status|google|wallet\b|"
                           r"wallet_core\.(api|storage|operations|server|reads|db))")
    for path in (ROOT / "wallet_core" / "domain").glob("*.py"):
        bad = [name for name in _imports(path) if forbidden.match(name)]
        assert not bad, f"{path.name} imports {bad}"


def test_bridge_domain_does_no_io_and_imports_no_edge() -> None:
    """gateway_bridge.domain imports no HTTP, database, gRPC or other bridge layer."""
    forbidden = re.compile(r"^(aiohttp|asyncpg|redis|grpc|wallet\b|wallet_core|"
                           r"gateway_bridge\.(?!domain))")
    for path in (ROOT / "gateway_bridge" / "domain").glob("*.py"):
        bad = [name for name in _imports(path) if forbidden.match(name)]
        assert not bad, f"{path.name} imports {bad}"


def test_sql_lives_only_in_storage_and_is_parameterized() -> None:
    """SQL statements appear only in the queries modules (storage/queries.py of each service,
    and the bridge's risk, reconciliation, incidents and support packages keep theirs in their own
    queries.py) and in the migration runner."""
    sql = re.compile(r"\b(SELECT\s+\S+.*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\.\w+\s+SET|DELETE\s+FROM)\b",
                     re.IGNORECASE | re.DOTALL)
    allowed = {ROOT / "wallet_core" / "storage" / "queries.py",
               ROOT / "gateway_bridge" / "storage" / "queries.py",
               ROOT / "gateway_bridge" / "risk" / "queries.py",
               ROOT / "gateway_bridge" / "reconciliation" / "queries.py",
               ROOT / "gateway_bridge" / "incidents" / "queries.py",
               ROOT / "gateway_bridge" / "support" / "queries.py",
               ROOT / "service_kit" / "migrations.py"}
    for path in [*ROOT.glob("wallet_core/**/*.py"), *ROOT.glob("service_kit/**/*.py"),
                 *ROOT.glob("gateway_bridge/**/*.py")]:
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not sql.search(node.value), f"SQL outside storage in {path}: {node.value[:60]}"
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values
                               if isinstance(v, ast.Constant) and isinstance(v.value, str))
                assert not sql.search(text), f"string-built SQL in {path}"
