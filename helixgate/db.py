"""Database access: one SQLAlchemy engine per process, short sessions, Alembic migrations.

All services share one declarative ``Base`` (tables are prefixed by the owning service:
``core_``, ``drs_``, ``trs_``, ``wes_``); each owner has its own Alembic environment and
version table so the services can be migrated and deployed independently.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import MetaData, create_engine, event, text
from sqlalchemy.engine import CursorResult, Engine, Result
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Database:
    """Engine + session factory. ``session()`` commits on success, rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, object] = {"future": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        s = self._factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a file-backed SQLite database, else None."""
        if not self.url.startswith("sqlite"):
            return None
        path = self.url.split("///", 1)[-1]
        return Path(path) if path and path != ":memory:" and not path.startswith("file:") else None


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched (``Session.execute`` is typed as returning any
    ``Result``; DML returns a ``CursorResult``)."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(result).__name__} has no row count (not the result of an UPDATE or DELETE)")
    return result.rowcount


# Session-level PostgreSQL advisory lock key (advisory locks are per database, so other
# software on the same server is unaffected): the first 8 bytes of sha256("helixgate.startup").
STARTUP_LOCK_KEY = int.from_bytes(hashlib.sha256(b"helixgate.startup").digest()[:8], "big", signed=True)


def serialize_writers(s: Session, table: str) -> None:
    """Make the rest of ``s``'s transaction the only writer guarded by ``table`` (a table the
    caller owns), so a check-then-insert across several tables (e.g. tool ids and aliases)
    cannot race. Call it before the transaction's first read.

    PostgreSQL: ``pg_advisory_xact_lock`` keyed by the table name (released at commit or
    rollback; per database, so other software on the server is unaffected). SQLite: the
    database write lock, taken by a write that changes nothing, so a concurrent writer waits
    (busy timeout) instead of both checking the same snapshot.
    """
    if s.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"helixgate.writers.{table}".encode()).digest()[:8], "big", signed=True)
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    else:
        s.execute(text(f'DELETE FROM "{table}" WHERE 0'))  # noqa: S608 - the caller's own table name


@contextlib.contextmanager
def startup_lock(db: Database) -> Iterator[None]:
    """Serialise first-start work (migrations, bootstrap rows) across every process sharing ``db``.

    PostgreSQL: ``pg_advisory_lock`` held on one connection for the duration; SQLite: an
    ``flock`` on ``<database file>.startup.lock`` next to the file. Others wait, then find the
    work done.
    """
    if db.is_postgres:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
            conn.commit()  # the lock is session-level: do not sit idle in a transaction
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK_KEY})
                conn.commit()
        return
    path = db.sqlite_path
    if path is None:  # in-memory: one process only
        yield
        return
    from helixgate.fsutil import file_lock

    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".startup.lock")):
        yield


def migrate(db: Database, packages: Iterable[str]) -> None:
    """Upgrade each owner's tables to the newest Alembic revision (idempotent), in order.

    ``packages`` are the services' migration packages (``ServiceDeclaration.migrations``),
    the core's first.
    """
    import importlib.util

    from alembic import command
    from alembic.config import Config

    for pkg in packages:
        spec = importlib.util.find_spec(pkg)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise RuntimeError(f"migration package {pkg} not found")
        cfg = Config()
        cfg.set_main_option("script_location", locations[0])
        cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
        cfg.attributes["connection_engine"] = db.engine
        command.upgrade(cfg, "head")
