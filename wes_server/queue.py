"""The run queue, behind one small interface: ``sql`` (default) and ``sqs``.

Delivery is at-least-once. The queue only carries run ids; the run row is the
authority on who runs what (``wes_server.runs.RunStore.claim`` is a compare-and-set),
so a duplicate delivery can never start a run twice.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import and_, or_, select, update

from helixgate.config import Settings
from helixgate.db import Database, rowcount
from helixgate.errors import UpstreamError
from wes_server.models import QueueRow


@dataclass(frozen=True)
class Lease:
    run_id: str
    receipt: str
    deliveries: int


class RunQueue(Protocol):
    name: str

    def enqueue(self, run_id: str) -> None: ...
    def lease(self, worker_id: str, lease_seconds: int) -> Lease | None: ...
    def extend(self, lease: Lease, lease_seconds: int) -> bool: ...
    def ack(self, lease: Lease) -> None: ...
    def release(self, lease: Lease, delay_seconds: int = 0) -> None: ...


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SqlRunQueue:
    """Row leases; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so workers never block each other."""

    name = "sql"

    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(self, run_id: str) -> None:
        with self.db.session() as s:
            row = s.get(QueueRow, run_id)
            if row is None:
                s.add(QueueRow(run_id=run_id))
            else:  # re-queue: make it available now
                row.leased_by, row.receipt, row.available_at = None, None, _now()

    def lease(self, worker_id: str, lease_seconds: int) -> Lease | None:
        now = _now()
        receipt = secrets.token_hex(16)
        with self.db.session() as s:
            q = select(QueueRow.run_id).where(QueueRow.available_at <= now).order_by(QueueRow.available_at).limit(1)
            if self.db.is_postgres:
                q = q.with_for_update(skip_locked=True)
            run_id = s.scalar(q)
            if run_id is None:
                return None
            # compare-and-set: on SQLite another process may have taken it meanwhile
            res = s.execute(
                update(QueueRow)
                .where(and_(QueueRow.run_id == run_id, QueueRow.available_at <= now))
                .values(
                    leased_by=worker_id,
                    receipt=receipt,
                    available_at=now + timedelta(seconds=lease_seconds),
                    deliveries=QueueRow.deliveries + 1,
                )
            )
            if rowcount(res) != 1:
                return None
            deliveries = s.scalar(select(QueueRow.deliveries).where(QueueRow.run_id == run_id)) or 1
            return Lease(run_id, receipt, deliveries)

    def extend(self, lease: Lease, lease_seconds: int) -> bool:
        with self.db.session() as s:
            res = s.execute(
                update(QueueRow)
                .where(and_(QueueRow.run_id == lease.run_id, QueueRow.receipt == lease.receipt))
                .values(available_at=_now() + timedelta(seconds=lease_seconds))
            )
            return rowcount(res) == 1

    def ack(self, lease: Lease) -> None:
        with self.db.session() as s:
            row = s.get(QueueRow, lease.run_id)
            if row is not None and row.receipt == lease.receipt:
                s.delete(row)

    def release(self, lease: Lease, delay_seconds: int = 0) -> None:
        with self.db.session() as s:
            s.execute(
                update(QueueRow)
                .where(
                    and_(
                        QueueRow.run_id == lease.run_id,
                        or_(QueueRow.receipt == lease.receipt, QueueRow.receipt.is_(None)),
                    )
                )
                .values(leased_by=None, receipt=None, available_at=_now() + timedelta(seconds=delay_seconds))
            )

    def depth(self) -> int:
        with self.db.session() as s:
            return len(s.scalars(select(QueueRow.run_id)).all())


class SqsRunQueue:
    """Amazon SQS (or any SQS-compatible endpoint) through boto3, with bounded retries."""

    name = "sqs"

    def __init__(self, queue_url: str, *, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        import boto3
        from botocore.config import Config

        self.queue_url = queue_url
        self.client: Any = boto3.client(
            "sqs",
            endpoint_url=endpoint_url or None,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=25),
        )

    def _call(self, op: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(QueueUrl=self.queue_url, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            raise UpstreamError(f"SQS {op} failed after retries: {code}") from None

    def enqueue(self, run_id: str) -> None:
        self._call("send_message", MessageBody=run_id)

    def lease(self, worker_id: str, lease_seconds: int) -> Lease | None:
        resp = self._call(
            "receive_message",
            MaxNumberOfMessages=1,
            VisibilityTimeout=lease_seconds,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = resp.get("Messages") or []
        if not messages:
            return None
        m = messages[0]
        count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        return Lease(m["Body"], m["ReceiptHandle"], count)

    def extend(self, lease: Lease, lease_seconds: int) -> bool:
        try:
            self._call("change_message_visibility", ReceiptHandle=lease.receipt, VisibilityTimeout=lease_seconds)
            return True
        except UpstreamError:
            return False

    def ack(self, lease: Lease) -> None:
        self._call("delete_message", ReceiptHandle=lease.receipt)

    def release(self, lease: Lease, delay_seconds: int = 0) -> None:
        self._call("change_message_visibility", ReceiptHandle=lease.receipt, VisibilityTimeout=delay_seconds)


def make_queue(settings: Settings, db: Database) -> RunQueue:
    if settings.queue_backend == "sqs":
        return SqsRunQueue(
            settings.sqs_queue_url, endpoint_url=settings.sqs_endpoint_url or None, region=settings.s3_region
        )
    return SqlRunQueue(db)


def wait_backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> None:
    time.sleep(min(cap, base * (2**attempt)))
