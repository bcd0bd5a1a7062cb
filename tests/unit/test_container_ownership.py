"""Which task containers the reconciler may remove, per this deployment's own database
(``RunStore.runs_with_removable_containers``): ended runs, re-queued runs and runs whose lease
expired — never a live worker's run, never a run this database does not know (another
deployment sharing the scope or the engine)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from helixgate.db import Database, migrate
from wes_server.models import RunRow
from wes_server.runs import RunStore, utcnow


def _store(tmp_path: Path) -> RunStore:
    db = Database(f"sqlite:///{tmp_path / 'runs.db'}")
    migrate(db)
    return RunStore(db)


def _run(store: RunStore, state: str, heartbeat_age: float | None) -> str:
    row = store.create(owner="ann", request={}, tags={}, attachments=[], workflow_source={})
    heartbeat = None if heartbeat_age is None else utcnow() - timedelta(seconds=heartbeat_age)
    with store.db.session() as s:
        s.execute(
            update(RunRow).where(RunRow.id == row.id).values(state=state, heartbeat_at=heartbeat, worker_id="w1")
        )
    return row.id


def test_only_ended_requeued_or_expired_runs_of_this_database(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ended = {_run(store, st, 1) for st in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")}
    requeued = _run(store, "QUEUED", None)
    expired = _run(store, "RUNNING", 120)
    expired_init = _run(store, "INITIALIZING", 120)
    live = _run(store, "RUNNING", 1)
    canceling = _run(store, "CANCELING", 1)
    unknown = "f" * 32  # another deployment's run, or a run of a database this one never saw

    answer = store.runs_with_removable_containers(
        [*ended, requeued, expired, expired_init, live, canceling, unknown], lease_seconds=60
    )

    assert answer == {*ended, requeued, expired, expired_init}
    assert store.runs_with_removable_containers([], lease_seconds=60) == set()
    assert store.runs_with_removable_containers([unknown], lease_seconds=60) == set()
