"""Which task containers the reconciler may remove, per this deployment's own database
(``RunStore.container_owners``): all containers of ended, re-queued or lease-expired runs;
of a run with a live lease only those another process started (a lost earlier attempt);
never any of a run this database does not know (another deployment sharing the engine)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from helixgate.db import Database
from helixgate_app.services import migrate_all
from wes_server.models import RunRow
from wes_server.runs import RunStore, utcnow


def _store(tmp_path: Path) -> RunStore:
    db = Database(f"sqlite:///{tmp_path / 'runs.db'}")
    migrate_all(db)
    return RunStore(db)


def _run(store: RunStore, state: str, heartbeat_age: float | None, worker: str | None = "host-a:41:abc123") -> str:
    row = store.create(owner="ann", request={}, tags={}, attachments=[], workflow_source={})
    heartbeat = None if heartbeat_age is None else utcnow() - timedelta(seconds=heartbeat_age)
    with store.db.session() as s:
        s.execute(
            update(RunRow).where(RunRow.id == row.id).values(state=state, heartbeat_at=heartbeat, worker_id=worker)
        )
    return row.id


def test_verdicts_of_this_database_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ended = {_run(store, st, 1) for st in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")}
    requeued = _run(store, "QUEUED", None, worker=None)
    expired = _run(store, "RUNNING", 120)
    expired_init = _run(store, "INITIALIZING", 120)
    live = _run(store, "RUNNING", 1, worker="host-b:7:def456")
    canceling = _run(store, "CANCELING", 1, worker="host-a:41:abc123")
    unknown = "f" * 32  # another deployment's run, or a run of a database this one never saw

    verdicts = store.container_owners(
        [*ended, requeued, expired, expired_init, live, canceling, unknown], lease_seconds=60
    )

    assert verdicts == {
        **dict.fromkeys([*ended, requeued, expired, expired_init]),
        live: "host-b:7",
        canceling: "host-a:41",
    }
    assert store.container_owners([], lease_seconds=60) == {}
    assert store.container_owners([unknown], lease_seconds=60) == {}
