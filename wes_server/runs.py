"""Run and task records: creation, visibility, keyset paging, the run state machine,
claims and heartbeats (the authoritative lease), and the reconciler's view of stale runs."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import and_, delete, func, or_, select, update

from helixgate.db import Database, rowcount
from helixgate.errors import BadRequest, Hidden, NotFound
from helixgate.limits import bounded_int
from wes_server.models import AttachmentRow, RunRow, RunTagRow, TaskRow

STATES = (
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "CANCELING",
    "PREEMPTED",
)
TERMINAL = frozenset({"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"})
ACTIVE = frozenset({"INITIALIZING", "RUNNING", "CANCELING"})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; they are stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_token(token: str | None) -> int | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith("s") or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError
        return bounded_int(int(raw[1:]), "page_token", 0)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("invalid page_token") from None


def check_page_size(page_size: int | None, default: int = 50, maximum: int = 1000) -> int:
    if page_size is None:
        return default
    if page_size < 1 or page_size > maximum:
        raise BadRequest(f"page_size must be between 1 and {maximum}")
    return page_size


@dataclass(frozen=True)
class Attachment:
    path: str
    content: bytes
    sha256: str


class RunStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ creation & reads
    def create(
        self,
        *,
        owner: str,
        request: Mapping[str, Any],
        tags: Mapping[str, str],
        attachments: Sequence[Attachment],
        workflow_source: Mapping[str, Any],
    ) -> RunRow:
        run_id = uuid.uuid4().hex
        with self.db.session() as s:
            row = RunRow(
                id=run_id,
                owner=owner,
                state="QUEUED",
                request=dict(request),
                workflow_source=dict(workflow_source),
                outputs={},
                system_logs=[],
            )
            s.add(row)
            s.flush()
            for k, v in tags.items():
                s.add(RunTagRow(run_id=run_id, key=k[:128], value=str(v)[:512]))
            for a in attachments:
                s.add(AttachmentRow(run_id=run_id, path=a.path, sha256=a.sha256, content=a.content))
            s.flush()
            s.expunge(row)
            return row

    def get(self, run_id: str) -> RunRow:
        with self.db.session() as s:
            row = s.scalar(select(RunRow).where(RunRow.id == run_id))
            if row is None:
                raise NotFound(f"run not found: {run_id}")
            s.expunge(row)
            return row

    def visible(self, run_id: str, user: str | None, see_all: bool) -> RunRow:
        """The run, if ``user`` may see it. Other users' runs answer 404 (existence is not leaked)."""
        row = self.get(run_id)
        if not see_all and row.owner != user:
            # same answer as a missing run; the guard records the probe as a security event
            raise Hidden(f"run not found: {run_id}", f"run {run_id} belongs to another user", subject=run_id)
        return row

    def tags(self, run_id: str) -> dict[str, str]:
        with self.db.session() as s:
            return {t.key: t.value for t in s.scalars(select(RunTagRow).where(RunTagRow.run_id == run_id))}

    def tags_for(self, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Tags of many runs in one query (a page of GET /runs)."""
        out: dict[str, dict[str, str]] = {r: {} for r in run_ids}
        if not run_ids:
            return out
        with self.db.session() as s:
            for t in s.scalars(select(RunTagRow).where(RunTagRow.run_id.in_(list(run_ids)))):
                out[t.run_id][t.key] = t.value
        return out

    def attachments(self, run_id: str) -> list[Attachment]:
        with self.db.session() as s:
            return [
                Attachment(a.path, a.content, a.sha256)
                for a in s.scalars(select(AttachmentRow).where(AttachmentRow.run_id == run_id))
            ]

    def page(
        self,
        *,
        owner: str | None,
        page_size: int,
        page_token: str | None,
        state: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> tuple[list[RunRow], str]:
        after = decode_token(page_token)
        with self.db.session() as s:
            q = select(RunRow)
            if owner is not None:
                q = q.where(RunRow.owner == owner)
            if state:
                if state not in STATES:
                    raise BadRequest(f"unknown state {state!r}; one of {', '.join(STATES)}")
                q = q.where(RunRow.state == state)
            for k, v in (tags or {}).items():
                q = q.where(
                    RunRow.id.in_(select(RunTagRow.run_id).where(and_(RunTagRow.key == k, RunTagRow.value == v)))
                )
            if after is not None:
                q = q.where(RunRow.seq < after)
            rows = list(s.scalars(q.order_by(RunRow.seq.desc()).limit(page_size + 1)))
            for r in rows:
                s.expunge(r)
        more = len(rows) > page_size
        rows = rows[:page_size]
        return rows, (encode_token(rows[-1].seq) if more and rows else "")

    def state_counts(self) -> dict[str, int]:
        with self.db.session() as s:
            counts = dict(s.execute(select(RunRow.state, func.count()).group_by(RunRow.state)).all())
        return {st: int(counts.get(st, 0)) for st in STATES}

    # ------------------------------------------------------------------ state machine
    def request_cancel(self, run_id: str) -> str:
        """Mark a run for cancellation; returns the new state."""
        with self.db.session() as s:
            row = s.scalar(select(RunRow).where(RunRow.id == run_id).with_for_update())
            if row is None:
                raise NotFound(f"run not found: {run_id}")
            if row.state in TERMINAL:
                return row.state  # cancelling an ended run is a no-op (WES declares no 409 here)
            row.cancel_requested = True
            if row.state == "QUEUED":
                row.state, row.end_time = "CANCELED", utcnow()
            else:
                row.state = "CANCELING"
            return row.state

    def claim(self, run_id: str, worker_id: str, lease_seconds: int, max_attempts: int) -> RunRow | None:
        """Compare-and-set QUEUED -> INITIALIZING for this worker; None if someone else owns it."""
        now = utcnow()
        stale = now - timedelta(seconds=lease_seconds)
        with self.db.session() as s:
            res = s.execute(
                update(RunRow)
                .where(
                    RunRow.id == run_id,
                    or_(
                        RunRow.state == "QUEUED",
                        and_(RunRow.state.in_(("INITIALIZING", "RUNNING")), RunRow.heartbeat_at < stale),
                    ),
                    RunRow.attempts < max_attempts,
                )
                .values(
                    state="INITIALIZING",
                    worker_id=worker_id,
                    heartbeat_at=now,
                    attempts=RunRow.attempts + 1,
                    start_time=func.coalesce(RunRow.start_time, now),
                )
            )
            if rowcount(res) != 1:
                return None
        return self.get(run_id)

    def heartbeat(self, run_id: str, worker_id: str) -> bool | None:
        """Refresh the lease. Returns cancel_requested, or None if the run is no longer ours."""
        with self.db.session() as s:
            res = s.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.worker_id == worker_id, RunRow.state.in_(tuple(ACTIVE)))
                .values(heartbeat_at=utcnow())
            )
            if rowcount(res) != 1:
                return None
            return bool(s.scalar(select(RunRow.cancel_requested).where(RunRow.id == run_id)))

    def set_state(self, run_id: str, state: str, *, worker_id: str | None = None, **fields: Any) -> bool:
        """Move a run to ``state`` (only from a non-terminal state, and only by its worker if given)."""
        if state not in STATES:
            raise ValueError(state)
        values: dict[str, Any] = {"state": state, **fields}
        if state in TERMINAL:
            values.setdefault("end_time", utcnow())
        with self.db.session() as s:
            q = update(RunRow).where(RunRow.id == run_id, RunRow.state.notin_(tuple(TERMINAL)))
            if state == "RUNNING":  # a cancel requested while the run was being prepared wins
                q = q.where(RunRow.state != "CANCELING")
            if worker_id is not None:
                q = q.where(RunRow.worker_id == worker_id)
            res = s.execute(q.values(**values))
            return rowcount(res) == 1

    def append_system_log(self, run_id: str, message: str) -> None:
        with self.db.session() as s:
            row = s.scalar(select(RunRow).where(RunRow.id == run_id).with_for_update())
            if row is not None:
                row.system_logs = [*(row.system_logs or []), message[:4000]]

    def stale_runs(self, lease_seconds: int) -> list[RunRow]:
        """Active runs whose worker stopped heart-beating."""
        cutoff = utcnow() - timedelta(seconds=lease_seconds)
        with self.db.session() as s:
            rows = list(s.scalars(select(RunRow).where(RunRow.state.in_(tuple(ACTIVE)), RunRow.heartbeat_at < cutoff)))
            for r in rows:
                s.expunge(r)
            return rows

    def container_owners(self, run_ids: Iterable[str], lease_seconds: int) -> dict[str, str | None]:
        """For each of ``run_ids`` (found on this deployment's task containers) that THIS database
        knows: None when all its containers may be removed — the run ended, is queued again (its
        worker lost the lease; a worker claims a run before it starts a container) or its lease
        expired — else the ``host:pid`` of the worker process holding its live lease (only that
        process's containers are the run's current attempt). A run this database does not know
        is left out: its containers belong to someone else sharing the scope."""
        ids = sorted(set(run_ids))
        cutoff = utcnow() - timedelta(seconds=lease_seconds)
        verdicts: dict[str, str | None] = {}
        with self.db.session() as s:
            for start in range(0, len(ids), 500):
                rows = s.execute(
                    select(RunRow.id, RunRow.state, RunRow.heartbeat_at, RunRow.worker_id).where(
                        RunRow.id.in_(ids[start : start + 500])
                    )
                )
                for run_id, state, heartbeat_at, worker_id in rows:
                    live = (
                        state in ACTIVE
                        and heartbeat_at is not None
                        and _aware(heartbeat_at) >= cutoff
                        and worker_id is not None
                    )
                    verdicts[run_id] = str(worker_id).rsplit(":", 1)[0] if live else None
        return verdicts

    def requeue(self, run_id: str, message: str) -> bool:
        with self.db.session() as s:
            res = s.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.state.in_(tuple(ACTIVE)))
                .values(state="QUEUED", worker_id=None, heartbeat_at=None)
            )
            ok = rowcount(res) == 1
        if ok:
            self.append_system_log(run_id, message)
        return ok

    # ------------------------------------------------------------------ tasks
    def add_task(self, run_id: str, task_id: str, name: str, **fields: Any) -> None:
        with self.db.session() as s:
            s.add(TaskRow(id=task_id, run_id=run_id, name=name, state=fields.pop("state", "RUNNING"), **fields))

    def update_task(self, run_id: str, task_id: str, **fields: Any) -> None:
        with self.db.session() as s:
            s.execute(update(TaskRow).where(TaskRow.run_id == run_id, TaskRow.id == task_id).values(**fields))

    def tasks(self, run_id: str, page_size: int, page_token: str | None) -> tuple[list[TaskRow], str]:
        after = decode_token(page_token)
        with self.db.session() as s:
            q = select(TaskRow).where(TaskRow.run_id == run_id)
            if after is not None:
                q = q.where(TaskRow.seq > after)
            rows = list(s.scalars(q.order_by(TaskRow.seq).limit(page_size + 1)))
            for r in rows:
                s.expunge(r)
        more = len(rows) > page_size
        rows = rows[:page_size]
        return rows, (encode_token(rows[-1].seq) if more and rows else "")

    def all_tasks(self, run_id: str) -> list[TaskRow]:
        return self.tasks(run_id, 100000, None)[0]

    def task(self, run_id: str, task_id: str) -> TaskRow:
        with self.db.session() as s:
            row = s.scalar(select(TaskRow).where(TaskRow.run_id == run_id, TaskRow.id == task_id))
            if row is None:
                raise NotFound(f"task not found: {task_id}")
            s.expunge(row)
            return row

    def delete_tasks(self, run_id: str, names: Iterable[str] | None = None) -> None:
        with self.db.session() as s:
            q = delete(TaskRow).where(TaskRow.run_id == run_id)
            if names is not None:
                q = q.where(TaskRow.name.in_(list(names)))
            s.execute(q)
