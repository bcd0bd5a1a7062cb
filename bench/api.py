"""API: ``POST /runs`` acceptance (latency, and throughput with 4 concurrent clients), then
``GET /runs/{id}/status``, ``GET /runs`` pages and DRS ``GET /objects/{id}`` latency (median,
p99) with a small and a large number of records stored — the cost must not grow with the count.

Two live servers side by side, one holding the small and one the large number of records,
seeded in bulk straight into each server's SQLite database (SQLAlchemy Core inserts on the
services' own tables: runs with a tag each, spread over 10 owners; blob objects in a dataset
the reader holds a grant on). Reads alternate between the two servers request by request
(in alternating order), so drift on the machine touches both sides alike. The servers run
without workers, so accepted runs stay queued and no container starts.

    .venv/bin/python -m bench.api [--quick]      # quick: 2,000 and 20,000 records; full: 10,000 and 100,000
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from bench.common import (
    BenchContext,
    Options,
    Row,
    bench_image,
    fmt_ratio,
    fmt_seconds,
    median,
    percentile,
    ratio,
    run_standalone,
    start_live_server,
    wes_world,
)

NAME = "api"
OWNERS = ("ann", *(f"user{i}" for i in range(1, 10)))  # the reader owns 1 run in 10
BATCH = 5000


def counts(opts: Options) -> tuple[int, int, int, int]:
    """(small count, large count, latency samples per measure, POST /runs submissions)."""
    return (2_000, 20_000, 200, 40) if opts.quick else (10_000, 100_000, 1000, 200)


class Seeder:
    """Bulk inserts into the server's database; keeps the ids it made."""

    def __init__(self, url: str, dataset_id: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url)
        self.dataset_id = dataset_id
        self.reader_runs: list[str] = []
        self.objects: list[str] = []
        self.runs = 0

    def close(self) -> None:
        self.engine.dispose()

    def runs_to(self, total: int) -> None:
        from sqlalchemy import insert

        from wes_server.models import RunRow, RunTagRow

        now = datetime.now(timezone.utc)
        while self.runs < total:
            n = min(BATCH, total - self.runs)
            rows, tags = [], []
            for i in range(n):
                k = self.runs + i
                run_id = uuid.uuid4().hex
                owner = OWNERS[k % len(OWNERS)]
                if owner == "ann":
                    self.reader_runs.append(run_id)
                t = now - timedelta(seconds=total - k)
                rows.append({
                    "id": run_id, "owner": owner, "state": "COMPLETE", "request": {"workflow_url": "bench.cwl"},
                    "workflow_source": {"kind": "attachment", "main": "bench.cwl"}, "created_at": t,
                    "start_time": t, "end_time": t, "exit_code": 0, "outputs": {}, "system_logs": [],
                    "cancel_requested": False, "attempts": 1, "updated_at": t,
                })
                tags.append({"run_id": run_id, "key": "batch", "value": f"b{k // 1000}"})
            with self.engine.begin() as conn:
                conn.execute(insert(RunRow), rows)
                conn.execute(insert(RunTagRow), tags)
            self.runs += n

    def objects_to(self, total: int) -> None:
        from sqlalchemy import insert

        from drs_store.models import ObjectRow

        now = datetime.now(timezone.utc)
        while len(self.objects) < total:
            n = min(BATCH, total - len(self.objects))
            rows = []
            for _ in range(n):
                object_id = uuid.uuid4().hex
                self.objects.append(object_id)
                rows.append({
                    "id": object_id, "kind": "blob", "name": "seeded.bin", "mime_type": "application/octet-stream",
                    "dataset_id": self.dataset_id, "public": False, "owner": "steward", "created_by": "steward",
                    "size": 1024, "sha256": uuid.uuid4().hex * 2, "backend": "local", "location": uuid.uuid4().hex,
                    "key_id": "seed", "external": False, "created_at": now, "updated_at": now, "blob_deleted": False,
                })
            with self.engine.begin() as conn:
                conn.execute(insert(ObjectRow), rows)


def latencies(samples: int, call: Callable[[int], Any]) -> list[float]:  # POST /runs
    out = []
    for i in range(samples):
        start = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - start)
    return out


def read_calls(api: Any, seeder: Seeder, samples: int) -> dict[str, tuple[int, Callable[[int], Any]]]:
    """Each read measure: (number of samples, the call for sample i) against one server."""
    from wes_server.runs import encode_token

    rnd = random.Random(7)
    runs = [rnd.choice(seeder.reader_runs) for _ in range(samples)]
    objects = [rnd.choice(seeder.objects) for _ in range(samples)]
    page_samples = max(20, samples // 5)
    with seeder.engine.connect() as conn:
        from sqlalchemy import func, select

        from wes_server.models import RunRow

        top = int(conn.execute(select(func.max(RunRow.seq))).scalar_one())
    middle = encode_token(top // 2)  # a page from the middle of the reader's history (keyset paging)
    return {
        "GET /runs/{id}/status": (samples, lambda i: api.get_json(f"/ga4gh/wes/v1/runs/{runs[i]}/status")),
        "GET /runs (first page of 50)": (page_samples, lambda i: api.get_json("/ga4gh/wes/v1/runs")),
        "GET /runs (page of 50 in the middle)": (
            page_samples,
            lambda i: api.get_json("/ga4gh/wes/v1/runs", params={"page_token": middle}),
        ),
        "DRS GET /objects/{id}": (samples, lambda i: api.get_json(f"/ga4gh/drs/v1/objects/{objects[i]}")),
        "GET /service-info (counts runs by state)": (
            max(10, samples // 20),
            lambda i: api.get_json("/ga4gh/wes/v1/service-info"),
        ),
    }


def measure_side_by_side(
    small: dict[str, tuple[int, Callable[[int], Any]]], large: dict[str, tuple[int, Callable[[int], Any]]]
) -> dict[str, tuple[list[float], list[float]]]:
    """Latencies of every measure on both servers, one request each in turn."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for measure, (n, call_small) in small.items():
        call_large = large[measure][1]
        lo: list[float] = []
        hi: list[float] = []
        for i in range(n):
            pair = ((call_small, lo), (call_large, hi)) if i % 2 == 0 else ((call_large, hi), (call_small, lo))
            for call, sink in pair:
                start = time.perf_counter()
                call(i)
                sink.append(time.perf_counter() - start)
        out[measure] = (lo, hi)
    return out


def run(opts: Options, ctx: BenchContext) -> list[Row]:
    from helixgate.config import load_settings
    from helixgate.sdk import HelixGate

    small, large, samples, submissions = counts(opts)
    image_ref, _ = bench_image(ctx)
    server = start_live_server(ctx, "server", workers=0)
    world = wes_world(ctx, server, image_ref, (1,))
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    dataset = steward.create_dataset("bench-seeded")
    steward.grant(dataset["id"], "ann")
    token = world.analyst.api._token
    rows: list[Row] = []

    # -- POST /runs: sequential latency, then 4 concurrent clients
    ctx.log(f"{NAME}: {submissions} POST /runs one at a time, then {submissions} with 4 concurrent clients")
    world.submit(1)  # warm-up
    seq = latencies(submissions, lambda i: world.submit(1))
    errors: list[BaseException] = []

    def client_loop(n: int) -> None:
        from dataclasses import replace

        mine = replace(world, analyst=HelixGate.connect(server.url, token))
        try:
            for _ in range(n):
                mine.submit(1)
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(submissions // 4,)) for _ in range(4)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"concurrent submission failed: {errors[0]!r}")
    rows += [
        Row("api", "POST /runs (TRS workflow + DRS input), one client: median / p99",
            f"{fmt_seconds(median(seq))} / {fmt_seconds(percentile(seq, 99))}", "", "",
            "ref. sapporo 24 ms, wes-service 16.5 ms"),
        Row("api", "POST /runs accepted per second, 4 concurrent clients",
            f"{4 * (submissions // 4) / wall:.1f} runs/s"),
    ]

    # -- reads: a second server holds the large count; both are read in turn
    large_server = start_live_server(ctx, "server-large", workers=0)
    large_reader = HelixGate.connect(large_server.url, large_server.user("ann", "analyst"))  # registers ann
    large_steward = HelixGate.connect(large_server.url, large_server.user("steward", "data-steward"))
    large_dataset = large_steward.create_dataset("bench-seeded")
    large_steward.grant(large_dataset["id"], "ann")
    readers: dict[int, tuple[Any, Seeder]] = {}
    for count, srv, dataset_id, api in (
        (small, server, dataset["id"], world.analyst.api),
        (large, large_server, large_dataset["id"], large_reader.api),
    ):
        seeder = Seeder(load_settings(env=srv.env).effective_database_url, dataset_id)
        ctx.cleanups.callback(seeder.close)
        ctx.log(f"{NAME}: seeding {count:,} runs and {count:,} DRS objects into {srv.url}")
        seeder.runs_to(count)
        seeder.objects_to(count)
        readers[count] = (api, seeder)
    ctx.log(f"{NAME}: measuring reads, {small:,} and {large:,} records side by side")
    warm = {c: read_calls(api, seeder, max(10, samples // 10)) for c, (api, seeder) in readers.items()}
    measure_side_by_side(warm[small], warm[large])  # warm-up (caches, connections)
    results = measure_side_by_side(
        read_calls(*readers[small], samples), read_calls(*readers[large], samples)
    )
    for measure, (lo, hi) in results.items():
        rows.append(Row(
            "api", f"{measure}: median / p99 at {large:,} (HelixGate) vs {small:,} (Baseline)",
            f"{fmt_seconds(median(hi))} / {fmt_seconds(percentile(hi, 99))}",
            f"{fmt_seconds(median(lo))} / {fmt_seconds(percentile(lo, 99))}",
            f"{fmt_ratio(ratio(median(hi), median(lo)))} median", "flat (≈1.0×)",
        ))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(NAME, run, argv, __doc__ or NAME)


if __name__ == "__main__":
    raise SystemExit(main())
