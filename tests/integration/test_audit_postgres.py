"""The audit-trail contract on a real PostgreSQL server, plus appends from real processes.

Each test gets its own freshly created database, so row locks and sequences are the
server's, not a mock's.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from helixgate.audit import AuditTrail
from helixgate.db import Base, Database
from tests.fixtures.services import drop_postgres_database, fresh_postgres_database
from tests.unit.test_audit_chain import AuditChainContract, fill

pytestmark = pytest.mark.integration


@pytest.fixture()
def pg_audit_db(postgres_url: str) -> Iterator[Database]:
    url, name = fresh_postgres_database(postgres_url)
    db = Database(url)
    try:
        Base.metadata.create_all(db.engine)
        yield db
    finally:
        db.dispose()
        drop_postgres_database(postgres_url, name)


class TestAuditChainPostgres(AuditChainContract):
    @pytest.fixture()
    def audit_db(self, pg_audit_db: Database) -> Database:
        return pg_audit_db


def test_tables_use_timezone_aware_timestamps(pg_audit_db: Database) -> None:
    cols = sa.inspect(pg_audit_db.engine).get_columns("core_audit_records")
    time_col = next(c for c in cols if c["name"] == "time")
    assert getattr(time_col["type"], "timezone", False) is True


def _append_from_process(url: str, key_dir: str, worker: int, count: int) -> None:
    db = Database(url)
    try:
        trail = AuditTrail(db, Path(key_dir), checkpoint_every=40)
        for i in range(count):
            trail.record(category="execution", action="wes.task.start", outcome="success", actor=f"worker{worker}",
                         service="wes", target=f"task-{worker}-{i}")
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_appends_from_separate_processes_form_one_chain(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'audit.db'}")
        Base.metadata.create_all(db.engine)
    else:
        db = request.getfixturevalue("pg_audit_db")
    key_dir = tmp_path / "keys"
    trail = AuditTrail(db, key_dir)
    fill(trail, 1)
    trail.checkpoint()  # the key exists before the children start
    ctx = multiprocessing.get_context("spawn")  # no inherited engine or connections
    procs = [ctx.Process(target=_append_from_process, args=(db.url, str(key_dir), n, 40)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    report = trail.verify()
    assert report.ok, report.problems
    assert (report.first_seq, report.last_seq, report.records_checked) == (1, 161, 161)
    assert report.checkpoints_checked == 1 + 4  # the explicit one, then seq 40, 80, 120, 160
    if backend == "sqlite":
        db.dispose()
