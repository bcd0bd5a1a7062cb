"""The sql and sqs run queues pass the same behaviour tests (sql on SQLite and PostgreSQL,
sqs against the moto server)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Iterator

import boto3
import pytest

from helixgate.db import Database
from wes_server.queue import SqlRunQueue, SqsRunQueue

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sql", "sqs"])
def queue(request: pytest.FixtureRequest, database: Database) -> Iterator[Any]:
    if request.param == "sql":
        yield SqlRunQueue(database)
        return
    moto_url = request.getfixturevalue("aws_env")
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"runs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield SqsRunQueue(url, endpoint_url=moto_url)
    sqs.delete_queue(QueueUrl=url)


def test_enqueue_lease_ack(queue: Any) -> None:
    queue.enqueue("run-1")
    lease = queue.lease("w1", 30)
    assert lease is not None and lease.run_id == "run-1" and lease.deliveries == 1
    assert queue.lease("w2", 30) is None  # leased: invisible to others
    queue.ack(lease)
    assert queue.lease("w2", 1) is None


def test_expired_lease_is_redelivered(queue: Any) -> None:
    queue.enqueue("run-2")
    first = queue.lease("w1", 1)
    assert first is not None
    time.sleep(1.6)
    second = queue.lease("w2", 30)
    assert second is not None and second.run_id == "run-2" and second.deliveries == 2
    queue.ack(second)


def test_extend_keeps_the_lease(queue: Any) -> None:
    queue.enqueue("run-3")
    lease = queue.lease("w1", 1)
    assert lease is not None
    assert queue.extend(lease, 30)
    time.sleep(1.5)
    assert queue.lease("w2", 30) is None
    queue.ack(lease)


def test_release_makes_it_available_again(queue: Any) -> None:
    queue.enqueue("run-4")
    lease = queue.lease("w1", 30)
    assert lease is not None
    queue.release(lease)
    again = queue.lease("w2", 30)
    assert again is not None and again.run_id == "run-4"
    queue.ack(again)


def test_concurrent_workers_never_share_a_delivery(queue: Any) -> None:
    ids = [f"run-c{i}" for i in range(20)]
    for i in ids:
        queue.enqueue(i)
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        misses = 0
        while misses < 3:
            lease = queue.lease(name, 60)
            if lease is None:
                misses += 1
                continue
            with lock:
                got.append(lease.run_id)
            queue.ack(lease)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == sorted(ids)  # each delivered exactly once while leases held
