"""Least-privilege database roles: an owner that migrates, an application role that appends.

The owner role owns the database and every object in it and is used only by
`loyalty db upgrade`. The application role (the worker and the command line) may
read, insert into and update exactly the tables it writes; it owns nothing, cannot
run DDL, TRUNCATE or create temporary tables, cannot choose a ledger entry's `seq`
(it has INSERT on every other column of `ledger_entries`), and cannot write the
rule history. Triggers, which only an owner or a superuser can disable, do the rest.
"""

from __future__ import annotations

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from loyalty.errors import SettingsError

#: Tables the application writes, and how. Every table is readable.
APP_WRITES: dict[str, str] = {
    "contacts": "INSERT, UPDATE",
    "accounts": "INSERT, UPDATE",
    "processed_events": "INSERT",
    "staff_requests": "INSERT",
    "order_refunds": "INSERT",
    "earn_rules": "INSERT, UPDATE",
    # The command line edits the catalogue; the worker writes redemptions, and changes
    # nothing of one but its refund (a trigger also holds the owner to that).
    "rewards": "INSERT, UPDATE",
    "redemptions": "INSERT, UPDATE (status, refund_entry_id, refunded_at)",
    "dead_letters": "INSERT, UPDATE",
    # Lots (0011): the ledger's trigger writes available ones; the worker adds an order's
    # pending lot and cancels what a refund takes of it (the balance check covers the rest).
    "point_lots": "INSERT, UPDATE (remaining)",
    # Tier definitions (0011), edited from the command line; account tiers are written by
    # a SECURITY DEFINER function only.
    "tiers": "INSERT, UPDATE, DELETE",
    # The one program row (0011): `loyalty program set` changes it, nobody adds one.
    "program": "UPDATE",
    "message_crashes": "INSERT, UPDATE",
    # Outgoing events (0010): only the ledger's triggers (SECURITY DEFINER) insert events;
    # the relay marks them delivered and prunes delivered ones (a trigger refuses deleting
    # an undelivered one). Webhook subscriptions are managed from the command line; their
    # deliveries are fanned out, retried and pruned by the relay.
    "outbox_events": "UPDATE (delivered_at), DELETE",
    "webhook_subscriptions": "INSERT, UPDATE (removed_at)",
    "webhook_deliveries": "INSERT, UPDATE (status, attempts, next_attempt_at, retry_from, last_attempt_at,"
                          " delivered_at, last_status_code, last_error), DELETE",
}
#: `ledger_entries` columns the application may give; `seq` is the sequence's alone.
LEDGER_COLUMNS_NOT_GRANTED = frozenset({"seq"})


def url_of(raw: str, setting: str) -> URL:
    try:
        url = make_url(raw)
    except Exception as exc:
        raise SettingsError(f"{setting} is not a valid URL: {exc}") from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if not url.username:
        raise SettingsError(f"{setting} names no user")
    return url


def _ident(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def create_roles(bootstrap_url: str, owner_url: str, app_url: str) -> list[str]:
    """Create (or update) both roles and the database, as a superuser; returns what it did."""
    owner, app = url_of(owner_url, "LOYALTY_OWNER_DATABASE_URL"), url_of(
        app_url, "LOYALTY_DATABASE_URL")
    if owner.username == app.username:
        raise SettingsError("the owner and the application must be different roles")
    if owner.database != app.database:
        raise SettingsError("LOYALTY_OWNER_DATABASE_URL and LOYALTY_DATABASE_URL name "
                            "different databases")
    done: list[str] = []
    admin = create_engine(url_of(bootstrap_url, "LOYALTY_BOOTSTRAP_DATABASE_URL"),
                          isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            myself = conn.execute(text("SELECT current_user")).scalar_one()
            for url, what in ((owner, "owner"), (app, "application")):
                assert url.username is not None
                role = _ident(conn, url.username)
                found = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :n"),
                                     {"n": url.username}).first()
                if url.username == myself or (found is not None and found.rolsuper):
                    # It would be stripped of its superuser rights below.
                    raise SettingsError(f"the {what} role {url.username!r} is a superuser; "
                                        "give the owner and the application roles of their own")
                exists = found is not None
                verb = "ALTER" if exists else "CREATE"
                options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                conn.execute(text(f"{verb} ROLE {role} {options}"))
                if url.password:
                    # ALTER ROLE takes no bind parameters: the server quotes the literal.
                    statement = conn.execute(text("SELECT format('ALTER ROLE %I PASSWORD %L',"
                                                  " CAST(:n AS text), CAST(:p AS text))"),
                                             {"n": url.username, "p": url.password}).scalar_one()
                    conn.execute(text(statement))
                done.append(f"{'updated' if exists else 'created'} {what} role {url.username}")
            database = owner.database
            if not database:
                raise SettingsError("LOYALTY_OWNER_DATABASE_URL names no database")
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": database}).first() is not None
            db_ident, owner_ident = _ident(conn, database), _ident(conn, owner.username or "")
            if not exists:
                conn.execute(text(f"CREATE DATABASE {db_ident} OWNER {owner_ident}"))
                done.append(f"created database {database}")
            else:
                conn.execute(text(f"ALTER DATABASE {db_ident} OWNER TO {owner_ident}"))
        if exists:
            # A database made by an earlier version, as another role: hand its objects over.
            with create_engine(url_of(bootstrap_url, "LOYALTY_BOOTSTRAP_DATABASE_URL")
                               .set(database=database), isolation_level="AUTOCOMMIT",
                               poolclass=NullPool).connect() as conn:
                moved = _adopt(conn, owner.username or "")
                if moved:
                    done.append(f"gave {moved} objects of database {database} to "
                                f"{owner.username}")
    finally:
        admin.dispose()
    return done


def _adopt(conn: Connection, owner: str) -> int:
    rows = conn.execute(text("""
        WITH o AS (SELECT CAST(:owner AS text) AS owner)
        SELECT format('ALTER %s %s OWNER TO %I',
                      CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                     ELSE 'TABLE' END, c.oid::regclass, o.owner)
        FROM o, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')
          AND pg_get_userbyid(c.relowner) <> o.owner
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
        UNION ALL
        SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, o.owner)
        FROM o, pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> o.owner
    """), {"owner": owner}).scalars().all()
    for statement in rows:
        conn.execute(text(statement))
    return len(rows)


def grant_statements(conn: Connection, app_role: str, database: str) -> list[str]:
    """Everything the application role may do, from nothing; run after every migration."""
    role, db_ident = _ident(conn, app_role), _ident(conn, database)
    ledger_columns = [c for c in conn.execute(text(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = 'ledger_entries'"
        " ORDER BY ordinal_position")).scalars() if c not in LEDGER_COLUMNS_NOT_GRANTED]
    statements = [
        # No temporary tables for anyone but owners and superusers: a temp table may
        # shadow a real one in any code that does not qualify its names.
        f"REVOKE TEMPORARY ON DATABASE {db_ident} FROM PUBLIC",
        f"REVOKE ALL ON DATABASE {db_ident} FROM {role}",
        f"GRANT CONNECT ON DATABASE {db_ident} TO {role}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
        *(f"GRANT {rights} ON public.{table} TO {role}" for table, rights in APP_WRITES.items()),
        f"GRANT INSERT ({', '.join(_ident(conn, c) for c in ledger_columns)})"
        f" ON public.ledger_entries TO {role}",
    ]
    return statements


def grant_app(conn: Connection, app_url: str) -> str | None:
    """Grant the application role its rights in the connected database, unless the
    application connects as the owner itself (a single-role deployment)."""
    app = url_of(app_url, "LOYALTY_DATABASE_URL")
    current = conn.execute(text("SELECT current_user")).scalar_one()
    if app.username == current:
        return None
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"),
                          {"n": app.username}).first()
    if not exists:
        raise SettingsError(f"the application role {app.username!r} does not exist: run "
                            "`loyalty db create-roles` first")
    database = conn.execute(text("SELECT current_database()")).scalar_one()
    assert app.username is not None
    for statement in grant_statements(conn, app.username, database):
        conn.execute(text(statement))
    return app.username
