"""Project rules that code review would otherwise have to catch.

Most are layering rules (the house style's "Dependencies point inward"): the domain
does no I/O and imports no other layer, storage knows nothing of gRPC, the HTTP edge goes
through the use cases, the use cases see domain errors rather than asyncpg's. They read the
code with `ast`, so a rule sees only what is written, never what a module does when imported.
A rule the code breaks today is written anyway and marked `xfail(strict=True)` on the files
that break it, naming them: fixing one flips its test to XPASS, which fails the run until the
entry is removed. Files not listed are held to the rule from the start.
"""

from __future__ import annotations

import ast
import filecmp
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

# These tests only read files: run them with the unit tests (tests/layers.py).
pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


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


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _py_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).glob("**/*.py"))


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every name the module imports, absolute and in full, with its line: `import a.b` gives
    a.b, `from a.b import c` gives a.b.c (so `from wallet import v1` is seen as wallet.v1),
    and relative imports are resolved against the module's package."""
    package = path.relative_to(ROOT).parts[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.extend((module if a.name == "*" else f"{module}.{a.name}", node.lineno)
                         for a in node.names)
    return found


def _modules(*alternatives: str) -> re.Pattern[str]:
    """A pattern matching a dotted name that is one of `alternatives` or inside one."""
    return re.compile(rf"^(?:{'|'.join(alternatives)})(?:\.|$)")


def _imports_matching(path: Path, forbidden: re.Pattern[str]) -> list[str]:
    return [f"line {line}: {name}" for name, line in _imports(path) if forbidden.match(name)]


def _cases(paths: Iterable[Path], known: Mapping[str, str]) -> list[object]:
    """One test case per file; the files in `known` break the rule today and xfail strictly."""
    by_name = {_rel(p): p for p in paths}
    stale = set(known) - set(by_name)
    assert not stale, f"known violations name files outside the rule's scope: {sorted(stale)}"
    return [pytest.param(path, id=name, marks=[pytest.mark.xfail(strict=True, reason=known[name])]
                         if name in known else []) for name, path in by_name.items()]


# --- the domain: no I/O, no other layer ---------------------------------------------------

# I/O libraries (and the generated protobufs) no domain module may import. service_kit.fx is
# the one shared module the domains may use: integer currency arithmetic with no I/O.
DOMAIN_IO = (r"asyncpg", r"redis", r"grpc\w*", r"google", r"wallet", r"aiohttp", r"httpx",
             r"requests", r"urllib\.request", r"http\.client", r"socket", r"ssl", r"selectors",
             r"subprocess", r"asyncio", r"os", r"importlib", r"service_kit(?!\.fx(?:\.|$))")
# The bridge's pure modules (docs/ARCHITECTURE.md): the vocabulary in shared/ and each
# capability's rules. They may import one another, nothing else of the bridge.
BRIDGE_PURE = ("gateway_bridge/shared/*.py", "gateway_bridge/payments/model.py",
               "gateway_bridge/payments/view.py", "gateway_bridge/routing/rules.py",
               "gateway_bridge/routing/learning.py", "gateway_bridge/psp/declines.py",
               "gateway_bridge/kyc/model.py", "gateway_bridge/aml/rules.py",
               "gateway_bridge/fx/model.py", "gateway_bridge/fx/conversion.py",
               "gateway_bridge/risk/rules.py", "gateway_bridge/incidents/rules.py",
               "gateway_bridge/reconciliation/layouts.py",
               "gateway_bridge/reconciliation/matcher.py",
               "gateway_bridge/reconciliation/output.py", "gateway_bridge/support/report.py")


def _bridge_pure() -> list[Path]:
    return sorted(p for pattern in BRIDGE_PURE for p in ROOT.glob(pattern))


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


DOMAINS = {
    "wallet_core": (_py_files("wallet_core/domain"),
                    _modules(*DOMAIN_IO, r"wallet_core(?!\.domain(?:\.|$))", r"gateway_bridge")),
    "gateway_bridge": (_bridge_pure(), _modules(
        *DOMAIN_IO, r"wallet_core",
        r"gateway_bridge\.(?!(?:"
        + "|".join(re.escape(_module_of(p).removeprefix("gateway_bridge.")) for p in _bridge_pure())
        + r")(?:\.|$))")),
}


@pytest.mark.parametrize("service", sorted(DOMAINS))
def test_domain_does_no_io_and_imports_no_other_layer(service: str) -> None:
    """Each service's pure modules (wallet_core/domain; the bridge's shared/ and rules
    modules) import no I/O library, no generated protobufs and nothing but one another, and
    have no `async def` or `await`."""
    paths, forbidden = DOMAINS[service]
    assert paths, f"no pure modules in {service}: the rule checks nothing"
    for path in paths:
        bad = _imports_matching(path, forbidden)
        assert not bad, f"{_rel(path)} imports {bad}"
        awaits = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor
                                | ast.AsyncWith)]
        assert not awaits, f"{_rel(path)} is async (lines {awaits}): the domain does no I/O"


# --- the bridge: a folder per capability, calls in one direction ----------------------------

# What each folder of the bridge may import of the others (docs/ARCHITECTURE.md draws it).
# `metrics` is the one top-level module a capability may use: it defines the metrics and
# imports nothing of the bridge. The wiring (server.py, cli.py, config.py, demo.py) may import
# anything and nothing imports it but the edges.
BRIDGE_FOLDERS: dict[str, set[str]] = {
    "shared": set(),
    "metrics": set(),
    "psp": {"shared", "metrics"},
    "wallet": {"shared"},
    "fx": {"shared", "wallet"},
    "risk": {"shared"},
    "routing": {"shared", "metrics"},
    # KYC's provider client is built on the PSPs' outbound client and webhook helpers; the
    # restrictions its results call for go to the wallet.
    "kyc": {"shared", "psp", "wallet"},
    # The little-play rule reads the wallet's deposits and bets as the risk rules do.
    "aml": {"shared", "metrics", "risk"},
    "payments": {"shared", "metrics", "psp", "wallet", "fx", "risk", "routing", "kyc",
                 "aml"},
    "incidents": {"shared", "metrics", "psp"},
    "reconciliation": {"shared"},
    "support": {"shared", "psp", "wallet", "fx", "risk", "payments", "incidents",
                "reconciliation", "config", "kyc", "aml"},
    "http": {"shared", "metrics", "psp", "risk", "payments", "incidents", "config", "kyc"},
}
WIRING = {"__init__", "__main__", "server", "cli", "config", "demo"}
# Files that break the map today (strict xfails; none since the bridge-structure issue).
BRIDGE_FOLDERS_KNOWN: dict[str, str] = {}


def _bridge_unit(path: Path) -> str:
    """The folder (or top-level module) of the bridge a file belongs to."""
    parts = path.relative_to(ROOT / "gateway_bridge").with_suffix("").parts
    return parts[0]


def _bridge_imports(path: Path) -> set[str]:
    found = set()
    for name, _ in _imports(path):
        parts = name.split(".")
        if parts[0] == "gateway_bridge" and len(parts) > 1:
            found.add(parts[1])
    return found - {_bridge_unit(path)}


def test_bridge_folders_are_known() -> None:
    """Every folder and top-level module of the bridge is in the map or the wiring, so a new
    one gets a place in docs/ARCHITECTURE.md before it gets code."""
    units = {_bridge_unit(p) for p in _py_files("gateway_bridge")}
    unknown = units - set(BRIDGE_FOLDERS) - WIRING
    assert not unknown, f"bridge folders with no place in BRIDGE_FOLDERS: {sorted(unknown)}"


_CAPABILITY_FILES = [p for p in _py_files("gateway_bridge") if _bridge_unit(p) not in WIRING]


@pytest.mark.parametrize("path", _cases(_CAPABILITY_FILES, BRIDGE_FOLDERS_KNOWN))
def test_bridge_capabilities_import_in_one_direction(path: Path) -> None:
    """A capability's modules import only the folders the map allows it, so the folders'
    import graph has no loop (the next test proves the map has none)."""
    unit = _bridge_unit(path)
    bad = sorted(_bridge_imports(path) - BRIDGE_FOLDERS[unit])
    assert not bad, f"{_rel(path)} ({unit}) imports {bad}; allowed: {sorted(BRIDGE_FOLDERS[unit])}"


def test_bridge_folder_map_has_no_loop() -> None:
    """The allowed imports between folders form no cycle."""
    done: set[str] = set()

    def visit(unit: str, path: tuple[str, ...]) -> None:
        assert unit not in path, f"import loop: {' -> '.join((*path, unit))}"
        if unit in done:
            return
        for dep in BRIDGE_FOLDERS.get(unit, set()):
            visit(dep, (*path, unit))
        done.add(unit)

    for unit in BRIDGE_FOLDERS:
        visit(unit, ())


# --- the edges: storage and transport keep to their side ----------------------------------

WALLET_STORAGE_FORBIDDEN = _modules(r"grpc\w*", r"wallet", r"wallet_core\.api")


@pytest.mark.parametrize("path", _py_files("wallet_core/storage"), ids=_rel)
def test_wallet_storage_knows_nothing_of_grpc(path: Path) -> None:
    """wallet_core/storage imports no grpc* package, no generated wallet.v1 code and no
    wallet_core.api: storage is called by the use cases, never by or for the transport."""
    bad = _imports_matching(path, WALLET_STORAGE_FORBIDDEN)
    assert not bad, f"{_rel(path)} imports {bad}"


BRIDGE_HTTP_FORBIDDEN = _modules(r"gateway_bridge\.\w+\.(?:store|queries)", r"asyncpg")
# Files that break the rule today (strict xfails; none since the bridge-structure issue).
BRIDGE_HTTP_KNOWN: dict[str, str] = {}


@pytest.mark.parametrize("path", _cases(_py_files("gateway_bridge/http"), BRIDGE_HTTP_KNOWN))
def test_bridge_http_goes_through_the_use_cases(path: Path) -> None:
    """gateway_bridge/http imports no capability's store or queries and not asyncpg: the
    HTTP edge calls the use cases, which call storage."""
    bad = _imports_matching(path, BRIDGE_HTTP_FORBIDDEN)
    assert not bad, f"{_rel(path)} imports {bad}"


# --- the use cases: domain errors, not asyncpg's ------------------------------------------

# The modules that run a use case: they take a pool, open the transaction and call storage
# and the domain. Left out as not use cases: the domain packages (pure); storage/ and every
# queries.py, incidents/store.py and reconciliation/store.py (storage: they own the rows);
# reconciliation/layouts.py, matcher.py and output.py and support/report.py (pure parsing,
# matching and rendering); the edges (api/, http/, cli.py, support/cli.py, server.py) and
# db.py (the pool and the list of "database down" errors the edges and use cases share).
USE_CASES = (
    *(f"wallet_core/operations/{m}.py" for m in ("front", "engine", "handlers", "calls", "batch")),
    "wallet_core/reads.py", "wallet_core/group_commit.py",
    "gateway_bridge/payments/cashier.py", "gateway_bridge/payments/inbox.py",
    "gateway_bridge/payments/status_sync.py", "gateway_bridge/payments/review.py",
    "gateway_bridge/payments/gauges.py", "gateway_bridge/fx/pinning.py",
    "gateway_bridge/risk/service.py", "gateway_bridge/incidents/rejections.py",
    "gateway_bridge/routing/service.py",
    "gateway_bridge/incidents/detector.py", "gateway_bridge/reconciliation/service.py",
    "gateway_bridge/support/resolution.py", "gateway_bridge/support/player.py",
)
# asyncpg names a use case may not touch: the row type, the exceptions module, and every
# error or constraint-violation class (asyncpg.Pool and asyncpg.Connection are fine).
ASYNCPG_ERROR_OR_ROW = re.compile(r"^(Record|exceptions|\w*Error|\w*Violation)$")
# Files that break the rule today (strict xfails; none since the bridge-structure issue).
USE_CASES_KNOWN: dict[str, str] = {}


def _asyncpg_errors_and_rows(path: Path) -> list[str]:
    """Where the module imports or names asyncpg's row type or an asyncpg exception."""
    tree = ast.parse(path.read_text())
    aliases = {a.asname or "asyncpg" for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name.split(".")[0] == "asyncpg"}
    used = [(name, line) for name, line in _imports(path) if name.startswith("asyncpg.")]
    used += [(f"asyncpg.{node.attr}", node.lineno) for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
             and node.value.id in aliases]
    return [f"line {line}: {name}" for name, line in sorted(set(used), key=lambda u: u[1])
            if any(ASYNCPG_ERROR_OR_ROW.match(part) for part in name.split(".")[1:])]


@pytest.mark.parametrize("path", _cases((ROOT / p for p in USE_CASES), USE_CASES_KNOWN))
def test_use_cases_see_no_asyncpg_errors_or_rows(path: Path) -> None:
    """No use case imports or names asyncpg.Record, asyncpg.exceptions or an asyncpg *Error /
    *Violation: storage turns rows into records and constraint errors into domain errors."""
    bad = _asyncpg_errors_and_rows(path)
    assert not bad, f"{_rel(path)} uses {bad}"


# --- the bridge's pool: every wait bounded ---------------------------------------------------


def _unbounded_acquires(source: str) -> list[str]:
    """Where `source` waits for a pooled connection with no bound: a `.acquire()` call with
    no `timeout=` that is not inside an `async with` that also enters `asyncio.timeout(...)`."""
    tree = ast.parse(source)
    bounded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith):
            calls = [item.context_expr for item in node.items]
            if any(isinstance(c, ast.Call) and ast.unparse(c.func) == "asyncio.timeout"
                   for c in calls):
                bounded.update(id(c) for c in calls)
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "acquire" and not node.args
            and not any(k.arg == "timeout" for k in node.keywords) and id(node) not in bounded]


def test_the_acquire_check_catches_an_unbounded_wait() -> None:
    bad = "async def f(pool):\n    async with pool.acquire() as conn:\n        pass\n"
    assert _unbounded_acquires(bad) == ["line 2: pool.acquire()"]
    fine = ("async def f(pool):\n"
            "    async with pool.acquire(timeout=1.0) as conn:\n        pass\n"
            "    async with asyncio.timeout(2), pool.acquire() as conn:\n        pass\n")
    assert _unbounded_acquires(fine) == []


ACQUIRE_KNOWN: dict[str, str] = {}


@pytest.mark.parametrize("path", _cases(_py_files("gateway_bridge"), ACQUIRE_KNOWN))
def test_bridge_pool_waits_are_bounded(path: Path) -> None:
    """Every wait for a pooled connection in the bridge is bounded (BRIDGE_DB_ACQUIRE_TIMEOUT_MS
    or an enclosing asyncio.timeout): a pool drained by a stuck PSP call must answer
    "unavailable", not hang the request."""
    bad = _unbounded_acquires(path.read_text())
    assert not bad, f"{_rel(path)} waits for a connection unbounded: {bad}"


def _transactions_without_isolation(source: str) -> list[str]:
    """`.transaction()` calls that leave the isolation level implicit."""
    return [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "transaction"
            and not any(k.arg == "isolation" for k in node.keywords)]


@pytest.mark.parametrize("path", _py_files("gateway_bridge"), ids=_rel)
def test_bridge_transactions_state_their_isolation(path: Path) -> None:
    """Where a bridge transaction begins it says its isolation level, so a reader knows what
    the row locks inside it must guarantee (docs/ARCHITECTURE.md)."""
    bad = _transactions_without_isolation(path.read_text())
    assert not bad, f"{_rel(path)} leaves the isolation implicit: {bad}"


# --- ports: no bind-and-close pickers -----------------------------------------------------

PORT_PICKER_NAME = re.compile(r"^_*(get_|find_|pick_)?(free|unused|available|open)_ports?$")


def _port_races(source: str) -> list[str]:
    """Where `source` picks a port by binding port 0 and closing the socket: a call
    `<x>.bind((host, 0))`, or a function named like free_port. docs/TESTING.md, "Ports"."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                PORT_PICKER_NAME.match(node.name)):
            found.append((node.lineno, f"def {node.name}"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "bind" and node.args
              and isinstance(address := node.args[0], ast.Tuple) and len(address.elts) >= 2
              and isinstance(port := address.elts[1], ast.Constant)
              and type(port.value) is int and port.value == 0):
            found.append((node.lineno, ast.unparse(node)))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_the_port_race_check_catches_bind_and_close() -> None:
    """The port-race check finds binds to port 0 and free_port helpers, and leaves servers
    that bind port 0 themselves and leased ports alone (so the next test cannot pass blind)."""
    bad = ("import socket\n"
           "def free_port():\n"
           "    with socket.socket() as s:\n"
           "        s.bind(('127.0.0.1', 0))\n"
           "        return s.getsockname()[1]\n"
           "async def _get_free_port(sock):\n"
           "    sock.bind(('', 0, 0, 0))\n")
    assert _port_races(bad) == ["line 2: def free_port", "line 4: s.bind(('127.0.0.1', 0))",
                                "line 6: def _get_free_port", "line 7: sock.bind(('', 0, 0, 0))"]
    fine = ("site = web.TCPSite(runner, '127.0.0.1', 0)\n"
            "server = await asyncio.start_server(accept, '127.0.0.1', 0)\n"
            "settings = replace(settings, listen_addr='127.0.0.1:0')\n"
            "s.bind((host, port))\n"
            "s.bind(('127.0.0.1', lease_port()))\n"
            "def lease_port(): ...\n")
    assert _port_races(fine) == []


def test_no_port_is_picked_by_binding_port_0_and_closing() -> None:
    """No test, benchmark or script picks a port by binding port 0 and closing the socket:
    servers bind port 0 themselves, or lease a port from loadtests/ports.py."""
    paths = [*_py_files("tests", "loadtests", "scripts"), *sorted(ROOT.glob("*.py"))]
    assert ROOT / "loadtests" / "ports.py" in paths, "the scan misses loadtests/: fix the globs"
    for path in paths:
        races = _port_races(path.read_text())
        assert not races, (f"{_rel(path)} picks a port by bind-and-close {races}: use "
                           "loadtests.ports.lease_port(), or let the server bind port 0")


def test_sql_lives_only_in_storage_and_is_parameterized() -> None:
    """SQL statements appear only in the queries modules (the wallet's storage/queries.py,
    and each capability folder of the bridge keeps its own queries.py) and in the migration
    runner."""
    sql = re.compile(r"\b(SELECT\s+\S+.*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\.\w+\s+SET|DELETE\s+FROM)\b",
                     re.IGNORECASE | re.DOTALL)
    allowed = {ROOT / "wallet_core" / "storage" / "queries.py",
               *ROOT.glob("gateway_bridge/*/queries.py"),
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
