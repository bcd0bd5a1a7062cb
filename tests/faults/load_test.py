"""A bounded load test on loopback: hundreds of concurrent run submissions, status polls and
uploads against one ``helixgate serve`` process. Bounded in count and in time; it stops by
itself. Every request must succeed and every run and object must be accounted for.

As a test:   .venv/bin/pytest tests/faults/load_test.py -s
Standalone:  .venv/bin/python -m tests.faults.load_test [--submissions 300 --uploads 200 --polls 900
             --concurrency 8 --database-url postgresql+psycopg://...]

The server runs without workers: this measures the API (authentication, audit, WES -> DRS
access checks, hashing + encryption of uploads), not task execution (see bench/ for that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from helixgate.sdk import HelixGate
from tests.faults.conftest import all_run_ids
from tests.fixtures.live import LiveServer, start_server, stop_server

WORKFLOW = b"""cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {dockerPull: "127.0.0.1:5000/helixgate-test/busybox@sha256:%s"}
baseCommand: [wc, -l]
inputs:
  text: {type: File, inputBinding: {position: 1}}
outputs:
  out: {type: stdout}
""" % (b"0" * 64)


@dataclass
class LoadReport:
    submissions: int
    uploads: int
    polls: int
    concurrency: int
    wall_seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"submit": [], "upload": [], "poll": []})
    errors: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    objects: dict[str, str] = field(default_factory=dict)  # object id -> sha256 the client computed

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], p: float) -> float:
            if not values:
                return 0.0
            ordered = sorted(values)
            return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

        total = sum(len(v) for v in self.latencies.values())
        return {
            "requests": total,
            "errors": len(self.errors),
            "wall_s": round(self.wall_seconds, 2),
            "requests_per_s": round(total / self.wall_seconds, 1) if self.wall_seconds else 0.0,
            "concurrency": self.concurrency,
            **{
                f"{kind}_ms": {
                    "n": len(v),
                    "median": round(1000 * statistics.median(v), 1) if v else 0.0,
                    "p95": pct(v, 0.95),
                    "max": pct(v, 1.0),
                }
                for kind, v in self.latencies.items()
            },
        }


def run_load(
    server_url: str,
    analyst_token: str,
    steward_token: str,
    dataset_id: str,
    input_uri: str,
    *,
    submissions: int = 300,
    uploads: int = 200,
    polls: int = 900,
    concurrency: int = 8,
    time_limit: float = 300.0,
    request_timeout: float = 60.0,
) -> LoadReport:
    """Fire the three request kinds interleaved from ``concurrency`` threads; stop at the counts or the time limit."""
    report = LoadReport(submissions, uploads, polls, concurrency)
    local = threading.local()
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def client(token: str) -> HelixGate:
        key = f"c{hash(token)}"
        if not hasattr(local, key):
            made = HelixGate.connect(server_url, token)
            made.api.timeout = request_timeout
            setattr(local, key, made)
        c: HelixGate = getattr(local, key)
        return c

    def timed(kind: str, fn: Callable[[], Any]) -> Any:
        if time.monotonic() > deadline:
            raise TimeoutError(f"load test time limit of {time_limit:.0f}s reached")
        start = time.perf_counter()
        result = fn()
        with lock:
            report.latencies[kind].append(time.perf_counter() - start)
        return result

    def submit(i: int) -> None:
        params = {"text": {"class": "File", "location": input_uri}}
        run_id = timed(
            "submit",
            lambda: client(analyst_token).submit_run(
                "wf.cwl", params, attachments={"wf.cwl": WORKFLOW}, tags={"load": str(i)}
            ),
        )
        with lock:
            report.run_ids.append(run_id)

    def upload(i: int) -> None:
        data = os.urandom(64 * 1024) + str(i).encode()
        digest = hashlib.sha256(data).hexdigest()
        obj = timed("upload", lambda: client(steward_token).upload(data, name=f"load-{i}.bin", dataset_id=dataset_id))
        if {"type": "sha-256", "checksum": digest} not in obj["checksums"]:
            raise AssertionError(f"upload {i}: server checksum differs from the client's")
        with lock:
            report.objects[obj["id"]] = digest

    def poll(i: int) -> None:
        with lock:
            known = list(report.run_ids)
        if known:
            timed("poll", lambda: client(analyst_token).run_status(known[i % len(known)]))
        else:
            timed("poll", lambda: client(analyst_token).api.get_json("/ga4gh/wes/v1/service-info"))

    jobs: list[Callable[[], None]] = []
    kinds = [(submit, submissions), (upload, uploads), (poll, polls)]
    longest = max(n for _, n in kinds)
    for i in range(longest):  # interleave the three kinds
        for fn, n in kinds:
            if i < n:
                jobs.append(lambda fn=fn, i=i: fn(i))  # type: ignore[misc]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(job) for job in jobs]
        for fut in as_completed(futures, timeout=time_limit + 3 * request_timeout):
            exc = fut.exception()
            if exc is not None:
                report.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    report.wall_seconds = time.monotonic() - started
    return report


def account(server_url: str, analyst_token: str, steward_token: str, report: LoadReport) -> None:
    """Every run the load test was promised exists exactly once and is QUEUED; every object
    exists with the checksum the client computed."""
    analyst = HelixGate.connect(server_url, analyst_token)
    listed = all_run_ids(analyst)
    counts = Counter(listed)
    assert not [r for r, n in counts.items() if n > 1], "duplicated runs in the listing"
    assert set(report.run_ids) == set(listed), "listed runs differ from accepted runs"
    assert len(report.run_ids) == report.submissions
    states = Counter(analyst.run_status(r) for r in report.run_ids)
    assert states == Counter({"QUEUED": report.submissions}), states
    steward = HelixGate.connect(server_url, steward_token)
    for object_id, digest in report.objects.items():
        meta = steward.get_object(object_id)
        assert {"type": "sha-256", "checksum": digest} in meta["checksums"]
    assert len(report.objects) == report.uploads


def prepare(server: LiveServer) -> tuple[str, str, str, str]:
    analyst_token = server.user("loadann", "analyst")
    steward_token = server.user("loadsue", "data-steward")
    steward = HelixGate.connect(server.url, steward_token)
    dataset = steward.create_dataset("load")
    steward.grant(dataset["id"], "loadann")
    obj = steward.upload(b"a\nb\n", name="in.txt", dataset_id=dataset["id"])
    host = server.url.split("://")[1]
    return analyst_token, steward_token, dataset["id"], f"drs://{host}/{obj['id']}"


@pytest.mark.integration
@pytest.mark.slow
def test_bounded_load_is_held_with_zero_errors_and_everything_accounted_for(
    live_server_factory: Callable[..., LiveServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = live_server_factory(workers=0)
    analyst, steward, dataset_id, uri = prepare(server)
    report = run_load(server.url, analyst, steward, dataset_id, uri, submissions=300, uploads=200, polls=900,
                      concurrency=8, time_limit=240)
    with capsys.disabled():
        print("\nload:", json.dumps(report.summary()))
    assert report.errors == [], report.errors[:10]
    account(server.url, analyst, steward, report)
    verify = server.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_more_concurrent_submissions_than_server_threads_do_not_stall(
    live_server_factory: Callable[..., LiveServer]
) -> None:
    server = live_server_factory(workers=0)
    analyst, steward, dataset_id, uri = prepare(server)
    report = run_load(server.url, analyst, steward, dataset_id, uri, submissions=64, uploads=0, polls=0,
                      concurrency=32, time_limit=45, request_timeout=10)
    assert report.errors == [], report.errors[:5]
    account(server.url, analyst, steward, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=300)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--polls", type=int, default=900)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=300)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default: embedded SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"HELIXGATE_DATABASE_URL": args.database_url} if args.database_url else {}
        server = start_server(Path(tmp), extra_env=env, workers=0)
        try:
            analyst, steward, dataset_id, uri = prepare(server)
            report = run_load(server.url, analyst, steward, dataset_id, uri, submissions=args.submissions,
                              uploads=args.uploads, polls=args.polls, concurrency=args.concurrency,
                              time_limit=args.time_limit)
            print(json.dumps(report.summary(), indent=2))
            if report.errors:
                print("errors:", *report.errors[:20], sep="\n  ")
                raise SystemExit(1)
            account(server.url, analyst, steward, report)
            print("accounted: every run listed once and QUEUED, every object present with its checksum")
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
