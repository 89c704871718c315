"""Least-privilege access to a PostgreSQL catalog: connection parameters, role checks, the GRANTs.

A PostgreSQL superuser cannot be sandboxed: it reads server files (``pg_read_file``, ``lo_import``),
signals other sessions, and undoes ``SET ROLE`` or a read-only transaction from inside a query
(``set_config('role', ...)``). The roles ``pg_read_server_files``, ``pg_write_server_files``,
``pg_execute_server_program`` and ``pg_signal_backend`` hand out parts of that power. So SQL a user
writes runs on PostgreSQL only with a role that has none of it (``synthdb query --engine catalog``
refuses otherwise), and :func:`grants_sql` prints the roles a team should use instead: an owner that
migrates and writes the catalog, and a reader that can only SELECT it.

Passwords never leave this module in messages: :func:`display` masks them.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from synthdb.errors import SynthdbError

PRIVILEGED_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
)
CONNECT_TIMEOUT_S = 10

_PRIVILEGES_SQL = (
    "SELECT current_user, r.rolsuper, ARRAY(SELECT b.rolname FROM pg_roles b "
    "WHERE b.rolname = ANY(%s) AND pg_has_role(current_user, b.oid, 'MEMBER') ORDER BY 1) "
    "FROM pg_roles r WHERE r.rolname = current_user"
)
_KEY = re.compile(r"^[a-z_]+$")


def display(url: sa.engine.URL) -> str:
    return url.render_as_string(hide_password=True)


def libpq_params(url: sa.engine.URL, settings: dict[str, str]) -> dict[str, str]:
    """libpq connection parameters for ``url``, with ``settings`` added to the server ``options`` as
    ``-c name=value`` (after any the URL carries, so they win)."""
    params: dict[str, str] = {}
    for key, value in url.query.items():
        if not _KEY.match(key):
            raise SynthdbError(f"catalog URL {display(url)} has an odd parameter {key!r}: fix catalog_url")
        params[key] = value if isinstance(value, str) else value[-1]
    fields = {"host": url.host, "port": url.port, "dbname": url.database, "user": url.username}
    params.update({k: str(v) for k, v in fields.items() if v not in (None, "")})
    if url.password:
        params["password"] = str(url.password)
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    params["options"] = f"{params['options']} {options}" if params.get("options") else options
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    return params


def role_privileges(cursor: Any) -> tuple[str, list[str]]:
    """The connected role and the privileges that make it unsafe for user SQL (``superuser`` and the
    server roles above it is a member of), read with a DBAPI cursor."""
    cursor.execute(_PRIVILEGES_SQL, (list(PRIVILEGED_ROLES),))
    role, superuser, roles = cursor.fetchone()
    return role, (["superuser"] if superuser else []) + list(roles)


def privileges_of(engine: sa.engine.Engine) -> tuple[str, list[str]]:
    """:func:`role_privileges` of the role an engine connects as."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            return role_privileges(cursor)
        finally:
            cursor.close()
    finally:
        raw.rollback()
        raw.close()


def grants_sql(database: str, owner: str = "synthdb_owner", reader: str = "synthdb_reader") -> str:
    """SQL a superuser runs once per catalog database: an owner role for synthdb's commands and a reader
    role for people who only query. Neither is a superuser or a member of a server role; the reader's
    sessions are read-only by default."""
    db = _ident(database)
    own, read = _ident(owner), _ident(reader)
    return "\n".join(
        [
            f"-- run once as a superuser on the server of database {database}, with passwords of your own",
            f"CREATE ROLE {own} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'change-me';",
            f"CREATE ROLE {read} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'change-me';",
            f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;",
            f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {own};",
            f"GRANT CONNECT ON DATABASE {db} TO {read};",
            f"-- then, connected to {database}:",
            f"GRANT USAGE, CREATE ON SCHEMA public TO {own};",
            f"GRANT USAGE ON SCHEMA public TO {read};",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {read};",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {own} IN SCHEMA public GRANT SELECT ON TABLES TO {read};",
            f"ALTER ROLE {read} SET default_transaction_read_only = on;",
            f"-- workspaces: catalog_url = postgresql://{owner}@HOST/{database}",
            f"-- people who only query: SYNTHDB_CATALOG_URL=postgresql://{reader}@HOST/{database}",
        ]
    )


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$-]*", name):
        raise SynthdbError(f"{name!r} is not a plain PostgreSQL name: use letters, digits and _")
    return '"' + name + '"'
