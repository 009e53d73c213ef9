"""All SQL is parameterized: every statement a driver call runs is a constant from a queries
module, and no constant there is built from runtime values.

An AST walk over wallet_core, gateway_bridge and service_kit (tests excluded) finds each call
of execute/executemany/fetch/fetchrow/fetchval/copy_*/prepare/cursor and checks its SQL
argument. The few justified exceptions are listed in EXCEPTIONS with their reason; a listed
exception that no longer matches anything fails too, so the list cannot rot.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("wallet_core", "gateway_bridge", "service_kit")
SQL_METHODS = frozenset({"execute", "executemany", "fetch", "fetchrow", "fetchval",
                         "copy_from_query", "copy_from_table", "copy_to_table",
                         "copy_records_to_table", "prepare", "cursor"})

# (file, source of the call's SQL argument) -> why it is safe.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("service_kit/migrations.py", "f\"SET lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'\""):
        "SET takes no bind parameters; the value is this module's integer constant",
    ("service_kit/migrations.py", "_CREATE_TABLE.format(schema=schema)"):
        "identifiers cannot be bound; `schema` is checked against a strict pattern first",
    ("service_kit/migrations.py", "_APPLIED.format(schema=schema)"):
        "identifiers cannot be bound; `schema` is checked against a strict pattern first",
    ("service_kit/migrations.py", "_RECORD.format(schema=schema)"):
        "identifiers cannot be bound; `schema` is checked against a strict pattern first; "
        "the values are bound ($1, $2)",
    ("service_kit/migrations.py", "migration.sql"):
        "a migration file shipped in the package, run as a whole script (DDL)",
    ("service_kit/migrations.py", "_LOCK"): "this module's constant; values bound",
    ("service_kit/migrations.py", "_UNLOCK"): "this module's constant; values bound",
    ("service_kit/migrations.py", "'RESET lock_timeout'"): "a constant statement, no values",
    ("wallet_core/storage/checker.py", "sql"):
        "iterates over the checker's constant queries (q.CHECK_*), no values",
    ("wallet_core/operations/front.py", "SYSTEM_CALLER"):
        "Operations.execute(caller, command): a use case, not a database call",
    ("wallet_core/api/servicer.py", "caller.name"):
        "Operations.execute(caller, command): a use case, not a database call",
}


@dataclass(frozen=True, slots=True)
class SqlCall:
    path: str
    line: int
    argument: str


def _python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _queries_aliases(tree: ast.Module) -> set[str]:
    """Names this module binds to a queries module (`from x.storage import queries as q`)."""
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for name in node.names:
                if name.name == "queries" or name.name.endswith("_queries"):
                    aliases.add(name.asname or name.name)
        elif isinstance(node, ast.Import):
            for name in node.names:
                if name.name.endswith(".queries") and name.asname:
                    aliases.add(name.asname)
    return aliases


def _names_from_queries(tree: ast.Module) -> set[str]:
    """Constants imported by name from a queries module."""
    return {name.asname or name.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("queries")
            for name in node.names}


def _is_query_constant(arg: ast.expr, aliases: set[str], names: set[str]) -> bool:
    if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name):
        return arg.value.id in aliases and arg.attr.isupper()
    if isinstance(arg, ast.Name):
        return arg.id in names and arg.id.isupper()
    if isinstance(arg, ast.IfExp):  # q.A if lock else q.B
        return all(_is_query_constant(b, aliases, names) for b in (arg.body, arg.orelse))
    return False


def _sql_calls_not_from_queries() -> list[SqlCall]:
    found: list[SqlCall] = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        aliases, names = _queries_aliases(tree), _names_from_queries(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in SQL_METHODS and node.args):
                continue  # redis pipe.execute() takes no arguments
            if not _is_query_constant(node.args[0], aliases, names):
                found.append(SqlCall(str(path.relative_to(ROOT)), node.lineno,
                                     ast.unparse(node.args[0])))
    return found


def test_every_sql_call_runs_a_queries_constant() -> None:
    """No driver call runs SQL built at runtime (f-string, %, +, .format) or written inline,
    except the listed, justified cases."""
    unexplained = [c for c in _sql_calls_not_from_queries()
                   if (c.path, c.argument) not in EXCEPTIONS]
    assert not unexplained, "SQL not from a queries module constant:\n" + "\n".join(
        f"  {c.path}:{c.line}: {c.argument}" for c in unexplained)


def test_every_listed_exception_still_exists() -> None:
    """An exception that matches no call any more is removed from the list, not kept."""
    seen = {(c.path, c.argument) for c in _sql_calls_not_from_queries()}
    stale = [key for key in EXCEPTIONS if key not in seen]
    assert not stale, f"stale SQL exceptions: {stale}"


def test_migrations_check_the_schema_name_before_formatting_it() -> None:
    """The one place that formats SQL (an identifier) validates it against a strict
    pattern first, so the .format exceptions above stay safe."""
    source = (ROOT / "service_kit" / "migrations.py").read_text()
    assert "fullmatch" in source or "re.match" in source, "schema name is not validated"


def test_the_checkers_statements_are_queries_constants() -> None:
    """The checker's loop variable `sql` (an exception above) only ever holds constants of
    wallet_core/storage/queries.py."""
    from wallet_core.storage import checker, queries

    constants = {v for k, v in vars(queries).items() if k.isupper() and isinstance(v, str)}
    assert all(sql in constants for _, sql in checker._CHECKS)


def _string_built(node: ast.expr, module_constants: set[str]) -> str | None:
    """Why a queries-module value is built from something other than constants, or None."""
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, ast.JoinedStr):
        for part in node.values:
            if isinstance(part, ast.FormattedValue) and not (
                    isinstance(part.value, ast.Name) and part.value.id in module_constants):
                return f"f-string interpolates {ast.unparse(part.value)}"
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _string_built(node.left, module_constants) or _string_built(
            node.right, module_constants)
    if isinstance(node, ast.Name) and node.id in module_constants:
        return None
    if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Call)):
        return None  # groupings/sets of statements are checked element by element below
    return f"built with {type(node).__name__}: {ast.unparse(node)[:60]}"


def test_queries_modules_hold_only_constant_sql() -> None:
    """In queries modules every string is a literal, or an f-string/concatenation that
    splices only the module's own constant strings (a column list), never a variable,
    a call, % or .format."""
    modules = [p for p in _python_files() if p.name == "queries.py"]
    assert len(modules) >= 2, modules
    problems: list[str] = []
    for path in modules:
        tree = ast.parse(path.read_text(), str(path))
        constants: set[str] = set()
        for node in tree.body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            value = getattr(node, "value", None)
            if not targets or value is None:
                continue
            why = _string_built(value, constants)
            if why:
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {why}")
            constants |= {t.id for t in targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "format":
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: .format()")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: % formatting")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: a function "
                                f"({node.name}) in a queries module can build SQL")
    assert not problems, "string-built SQL in queries modules:\n" + "\n".join(problems)


def test_the_checks_catch_string_built_sql() -> None:
    """The detectors flag each runtime-built form, so a green result means something."""
    tree = ast.parse("from x.storage import queries as q\n"
                     "async def f(conn, table, v):\n"
                     "    await conn.fetch(q.GOOD, v)\n"
                     "    await conn.fetch(f'SELECT * FROM {table}')\n"
                     "    await conn.execute('DELETE FROM t WHERE id = %s' % v)\n"
                     "    await conn.fetchval('SELECT ' + table)\n"
                     "    await conn.fetchrow(q.GOOD.format(t=table))\n")
    aliases, names = _queries_aliases(tree), _names_from_queries(tree)
    verdicts = [_is_query_constant(n.args[0], aliases, names) for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr in SQL_METHODS]
    assert verdicts == [True, False, False, False, False]
    assert _string_built(ast.parse("f'SELECT {x}'").body[0].value, set())  # type: ignore[attr-defined]
    assert _string_built(ast.parse("f'SELECT {COLS}'").body[0].value, {"COLS"}) is None  # type: ignore[attr-defined]
    assert _string_built(ast.parse("'SELECT ' + x").body[0].value, set())  # type: ignore[attr-defined]
