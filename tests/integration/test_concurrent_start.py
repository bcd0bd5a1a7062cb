"""Any number of processes may start at once on a fresh database: four real ``helixgate serve``
processes launched together on one fresh PostgreSQL database (and on one fresh SQLite file)
all come up; migrations and bootstrap ran once (one installation id, so one container scope
in every start line), and no process logged a traceback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from tests.fixtures.live import LiveServer, launch_server, stop_server, wait_until_up
from tests.fixtures.services import drop_postgres_database, fresh_postgres_database

pytestmark = pytest.mark.integration

PROCESSES = 4
START_LINE = re.compile(r"serving core on http://127\.0\.0\.1:\d+ \(container scope (hg-[0-9a-f]{16})\)")


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared-data' / 'helixgate.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    url, name = fresh_postgres_database(base)
    try:
        yield url
    finally:
        drop_postgres_database(base, name)


def test_simultaneous_first_starts_all_succeed_and_bootstrap_once(fresh_database: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "shared-data"  # one deployment: same data directory and database
    servers: list[LiveServer] = []
    try:
        for i in range(PROCESSES):  # launched back to back, before any has finished starting
            servers.append(
                launch_server(
                    tmp_path / f"p{i}",
                    data_dir=data_dir,
                    service="core",
                    workers=0,
                    extra_env={"HELIXGATE_DATABASE_URL": fresh_database},
                )
            )
        for server in servers:
            wait_until_up(server, timeout=120)
        scopes = set()
        for server in servers:
            log = server.log()
            assert "Traceback" not in log, log
            found = START_LINE.search(log)
            assert found, log
            scopes.add(found.group(1))
        assert len(scopes) == 1, f"every process must agree on one installation identity: {scopes}"
    finally:
        for server in servers:
            stop_server(server)
    engine = sa.create_engine(fresh_database)
    try:
        with engine.connect() as conn:
            ids = conn.execute(sa.text("SELECT installation_id FROM core_installation")).scalars().all()
            admins = conn.execute(sa.text("SELECT count(*) FROM core_users WHERE username = 'admin'")).scalar()
            versions = {
                owner: conn.execute(sa.text(f"SELECT count(*) FROM alembic_version_{owner}")).scalar()
                for owner in ("core", "drs", "trs", "wes")
            }
    finally:
        engine.dispose()
    assert len(ids) == 1 and scopes == {f"hg-{ids[0][:16]}"}
    assert admins == 1
    assert versions == {"core": 1, "drs": 1, "trs": 1, "wes": 1}
