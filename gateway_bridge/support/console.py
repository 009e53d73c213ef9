"""What every support command shares: its connection to the bridge's database (DATABASE_URL),
JSON on stdout, who is acting, and the message for a DATABASE_URL that names a database or
role the server does not have.

The commands talk to the database directly, so they work while the bridge is down. A wrong
DATABASE_URL is a configuration error, not a refusal worth retrying: the message names what
is missing and the URL to fix, without its password.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from service_kit.pg import database_url_from_env, init_json_codecs

# A support command gives up connecting after this long (the server is down or unreachable).
CONNECT_TIMEOUT_S = 5.0

# What the server answers when DATABASE_URL names a database, role or password it does not
# know (InvalidPasswordError is a kind of InvalidAuthorizationSpecificationError).
DATABASE_URL_WRONG = (asyncpg.InvalidCatalogNameError,
                      asyncpg.InvalidAuthorizationSpecificationError)


def actor_default() -> str:
    """Who a change is recorded as when --actor is not given: the person at the terminal."""
    return os.environ.get("USER") or "support"


async def connect() -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url_from_env(), timeout=CONNECT_TIMEOUT_S)
    await init_json_codecs(conn)
    return conn


def print_json(value: Any) -> None:
    def default(obj: object) -> str:
        if isinstance(obj, datetime):
            return obj.isoformat()
        raise TypeError
    print(orjson.dumps(value, default=default, option=orjson.OPT_INDENT_2).decode())


def without_password(url: str) -> str:
    """The URL as far as it locates the database: scheme, user, hosts and database name. The
    password goes, and so does the query string, which may carry one too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a postgresql:// URL)"
    location = rest.split("?", 1)[0].split("#", 1)[0]
    userinfo, at, hosts_and_path = location.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}{at}{hosts_and_path}"


def wrong_database_url(err: asyncpg.PostgresError, url: str) -> str:
    """What to fix when the server refused the database or role DATABASE_URL names. The
    server's own message names it (`database "x" does not exist`, `role "x" does not
    exist`, `password authentication failed for user "x"`) and never holds the password."""
    if isinstance(err, asyncpg.InvalidCatalogNameError):
        fix = "the database name"
    else:
        fix = "the user name or password"
    return (f"DATABASE_URL is wrong: {err}; check {fix} in DATABASE_URL "
            f"(now {without_password(url)})")
