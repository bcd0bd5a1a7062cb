"""Audit trail: hash chain, tamper detection, checkpoints, concurrency, query, CEF, purge.

``AuditChainContract`` holds the behaviour every database must show; it runs here on a
SQLite file and in tests/integration/test_audit_postgres.py on PostgreSQL.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from helixgate.audit import (
    GENESIS_HASH,
    KEY_FILENAME,
    AuditRecord,
    AuditTrail,
    VerifyReport,
    retention_cutoff,
    sanitize_details,
)
from helixgate.db import Base, Database
from helixgate.errors import BadRequest, ConfigurationError, Conflict, IntegrityError
from tests.unit.test_cef import parse_cef

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0
    step: timedelta = field(default=timedelta(seconds=1))

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def sql(db: Database, statement: str, **params: Any) -> Any:
    """Tamper with the database directly, as an attacker with SQL access would."""
    with db.engine.begin() as conn:
        return conn.execute(sa.text(statement), params)


def fill(trail: AuditTrail, n: int, **kw: Any) -> list[int]:
    return [
        trail.record(
            category=kw.get("category", "request"),
            action=kw.get("action", "drs.object.get"),
            outcome=kw.get("outcome", "success"),
            actor=kw.get("actor", f"user{i % 3}"),
            service=kw.get("service", "drs"),
            target=f"obj-{i}",
            request_id=f"req-{i}",
            client_addr="127.0.0.1",
            details={"i": i},
        )
        for i in range(n)
    ]


def head_hash(db: Database, seq: int) -> str:
    return str(sql(db, "SELECT hash FROM core_audit_records WHERE seq = :s", s=seq).scalar_one())


class AuditChainContract:
    """Subclasses provide an ``audit_db`` fixture (an empty Database with the tables created)."""

    @pytest.fixture()
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture()
    def trail(self, audit_db: Database, tmp_path: Path, clock: Clock) -> AuditTrail:
        return AuditTrail(audit_db, tmp_path / "keys", checkpoint_every=5, clock=clock)

    # ------------------------------------------------------------------ chain
    def test_chain_of_records_verifies(self, trail: AuditTrail) -> None:
        seqs = fill(trail, 12)
        seqs.append(trail.security_event("auth.denied", actor="bob", service="wes", details={"reason": "no role"}))
        seqs.append(trail.record(category="change", action="trs.tool.create", outcome="success", actor="dev",
                                 service="trs", target="tool-1"))
        assert seqs == list(range(1, 15))
        report = trail.verify()
        assert report.ok, report.problems
        assert (report.records_checked, report.first_seq, report.last_seq) == (14, 1, 14)
        assert report.checkpoints_checked == 2  # every 5 records: seq 5 and 10
        records, _ = trail.query(order="oldest", page_size=100)
        assert records[0].prev_hash == GENESIS_HASH
        for prev, cur in itertools.pairwise(records):
            assert cur.prev_hash == prev.hash
            assert cur.computed_hash() == cur.hash

    def test_empty_chain_verifies_and_has_no_checkpoint(self, trail: AuditTrail) -> None:
        assert trail.verify().ok
        assert trail.checkpoint() is None

    def test_edited_row_is_detected_naming_its_seq(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 8)
        sql(audit_db, "UPDATE core_audit_records SET actor = 'mallory' WHERE seq = 3")
        report = trail.verify()
        assert not report.ok
        assert len(report.problems) == 1
        assert report.problems[0].startswith("record seq 3: content hash mismatch")

    def test_edited_details_with_recomputed_hash_breaks_the_next_link(
        self, trail: AuditTrail, audit_db: Database
    ) -> None:
        fill(trail, 8)
        rec = trail.get(4)
        assert rec is not None
        forged = AuditRecord(**{**rec.__dict__, "details": {"i": 999}})
        sql(audit_db, "UPDATE core_audit_records SET details = :d, hash = :h WHERE seq = 4",
            d=json.dumps({"i": 999}, separators=(",", ":")), h=forged.computed_hash())
        problems = trail.verify().problems
        assert any(p.startswith("record seq 5: previous-hash link broken") for p in problems), problems

    def test_deleted_middle_row_is_detected_naming_the_seq(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 9)
        sql(audit_db, "DELETE FROM core_audit_records WHERE seq = 6")
        problems = trail.verify().problems
        assert any(p.startswith("record seq 7: seq 6 missing") for p in problems), problems
        assert any("checkpoint" not in p and "seq 6" in p for p in problems)

    def test_deleted_range_names_every_missing_seq(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 9)
        sql(audit_db, "DELETE FROM core_audit_records WHERE seq IN (2, 3, 4)")
        problems = trail.verify().problems
        assert any(p.startswith("record seq 5: seq 2..4 missing") for p in problems), problems

    def test_inserted_record_is_detected(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 4)
        last = trail.get(4)
        assert last is not None
        # A forged record with a correct SHA-256 linking to the real tail.
        forged = AuditRecord(**{**last.__dict__, "seq": 5, "actor": "mallory", "prev_hash": last.hash, "hash": ""})
        row = {**forged.to_dict(), "hash": forged.computed_hash(), "details": "{}", "time": last.time}
        row["details"] = json.dumps(forged.details, separators=(",", ":"))
        sql(audit_db, "INSERT INTO core_audit_records (seq, time, category, action, outcome, actor, on_behalf_of, "
            "service, target, request_id, client_addr, severity, details, prev_hash, hash) VALUES (:seq, :time, "
            ":category, :action, :outcome, :actor, :on_behalf_of, :service, :target, :request_id, :client_addr, "
            ":severity, :details, :prev_hash, :hash)", **row)
        problems = trail.verify().problems
        assert problems == [
            "record seq 5: records seq 5..5 lie beyond the chain head seq 4 (inserted outside the trail)"
        ]

    def test_truncated_tail_after_checkpoint_is_detected(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 12)
        cp = trail.checkpoint()
        assert cp is not None and cp.seq == 12
        assert trail.checkpoint() == cp  # idempotent while the head does not move
        # A careful attacker removes the tail and rewinds the head row too.
        sql(audit_db, "DELETE FROM core_audit_records WHERE seq > 9")
        sql(audit_db, "UPDATE core_audit_head SET seq = 9, hash = :h", h=head_hash(audit_db, 9))
        problems = trail.verify().problems
        assert "checkpoint seq 12: refers beyond the last record seq 9 (chain truncated)" in problems
        assert "checkpoint seq 10: refers beyond the last record seq 9 (chain truncated)" in problems

    def test_truncation_without_rewinding_the_head_is_detected(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 7)  # no checkpoint covers seq 6..7
        sql(audit_db, "DELETE FROM core_audit_records WHERE seq > 5")
        problems = trail.verify().problems
        assert any("chain head says seq 7" in p and "last record is seq 5" in p for p in problems), problems

    def test_forged_checkpoint_signature_is_detected(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 10)
        other = Ed25519PrivateKey.generate()
        # Move checkpoint 10 to a rewritten hash and "sign" it with the attacker's key.
        forged_sig = base64.b64encode(other.sign(b"whatever")).decode()
        sql(audit_db, "UPDATE core_audit_checkpoints SET signature = :s, hash = :h WHERE seq = 10",
            s=forged_sig, h="f" * 64)
        problems = trail.verify().problems
        assert problems == ["checkpoint seq 10: signature does not verify (forged or altered)"]

    def test_checkpoint_with_garbage_signature_is_detected(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 5)
        sql(audit_db, "UPDATE core_audit_checkpoints SET signature = 'not base64!' WHERE seq = 5")
        assert trail.verify().problems == ["checkpoint seq 5: signature does not verify (forged or altered)"]

    def test_rewritten_record_under_a_checkpoint_is_named(self, trail: AuditTrail, audit_db: Database) -> None:
        fill(trail, 5)
        # Rewrite seq 5 completely (hash recomputed): only the signed checkpoint can tell.
        rec = trail.get(5)
        assert rec is not None
        forged = AuditRecord(**{**rec.__dict__, "outcome": "failure"})
        sql(audit_db, "UPDATE core_audit_records SET outcome = 'failure', hash = :h WHERE seq = 5",
            h=forged.computed_hash())
        sql(audit_db, "UPDATE core_audit_head SET hash = :h", h=forged.computed_hash())
        problems = trail.verify().problems
        assert len(problems) == 1 and problems[0].startswith("checkpoint seq 5: signed hash"), problems

    # ------------------------------------------------------------------ concurrency
    def test_concurrent_appends_produce_a_gap_free_valid_chain(
        self, trail: AuditTrail, audit_db: Database, tmp_path: Path
    ) -> None:
        trail.checkpoint()  # creates the key before the writers race for it
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def writer(n: int) -> None:
            # Own engine per thread: as separate processes/replicas would have.
            db = Database(audit_db.url)
            try:
                own = AuditTrail(db, tmp_path / "keys", checkpoint_every=25)
                start.wait()
                for i in range(50):
                    own.record(category="request", action="wes.run.list", outcome="success", actor=f"t{n}",
                               service="wes", details={"i": i})
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.dispose()

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        rows = sql(audit_db, "SELECT seq, prev_hash FROM core_audit_records ORDER BY seq").all()
        assert [r[0] for r in rows] == list(range(1, 401))
        assert len({r[1] for r in rows}) == 400
        report = trail.verify()
        assert report.ok, report.problems
        assert report.checkpoints_checked == 400 // 25

    def test_verify_while_appending_reports_no_false_problems(
        self, trail: AuditTrail, audit_db: Database, tmp_path: Path
    ) -> None:
        fill(trail, 3)
        stop = threading.Event()
        errors: list[BaseException] = []
        appended: list[int] = []

        def writer() -> None:
            db = Database(audit_db.url)
            try:
                own = AuditTrail(db, tmp_path / "keys", checkpoint_every=7)
                while not stop.is_set():
                    own.record(category="request", action="x", outcome="success", actor="w", service="core")
                    appended.append(1)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.dispose()

        t = threading.Thread(target=writer)
        t.start()
        try:
            # at least 10 verifications, and some of them while the writer's records arrive
            reports: list[VerifyReport] = []
            deadline = time.monotonic() + 60
            while (len(reports) < 10 or len(appended) < 20) and time.monotonic() < deadline and not errors:
                reports.append(trail.verify())
        finally:
            stop.set()
            t.join(timeout=60)
        assert not errors, errors
        assert all(r.ok for r in reports), [r.problems for r in reports if not r.ok]
        assert reports[-1].records_checked > 3

    # ------------------------------------------------------------------ query
    def test_query_filters_and_keyset_paging(self, trail: AuditTrail, clock: Clock) -> None:
        fill(trail, 6)  # request, actors user0..2
        trail.security_event("auth.denied", actor="bob", service="drs", target="obj-x")
        trail.security_event("auth.failed", actor=None, service="wes", outcome="denied")
        trail.record(category="change", action="drs.object.create", outcome="success", actor="bob",
                     service="drs", target="obj-x")
        times = {r.seq: r.time for r in trail.query(page_size=100)[0]}

        newest, token = trail.query(page_size=4)
        assert [r.seq for r in newest] == [9, 8, 7, 6] and token
        rest, token2 = trail.query(page_size=4, page_token=token)
        assert [r.seq for r in rest] == [5, 4, 3, 2] and token2
        last, token3 = trail.query(page_size=4, page_token=token2)
        assert [r.seq for r in last] == [1] and token3 is None

        oldest, tok = trail.query(order="oldest", page_size=5)
        assert [r.seq for r in oldest] == [1, 2, 3, 4, 5]
        assert [r.seq for r in trail.query(order="oldest", page_size=5, page_token=tok)[0]] == [6, 7, 8, 9]
        with pytest.raises(BadRequest, match="page_token"):
            trail.query(order="newest", page_token=tok)  # an oldest-first token

        assert [r.seq for r in trail.query(category="security")[0]] == [8, 7]
        assert [r.seq for r in trail.query(action_prefix="auth.")[0]] == [8, 7]
        assert trail.query(action_prefix="auth%")[0] == []  # LIKE wildcards are literal
        assert [r.seq for r in trail.query(actor="bob")[0]] == [9, 7]
        assert [r.actor for r in trail.query(outcome="denied")[0]] == ["anonymous", "bob"]
        assert [r.seq for r in trail.query(target="obj-x", category="change")[0]] == [9]
        assert [r.seq for r in trail.query(since=times[7])[0]] == [9, 8, 7]  # inclusive
        assert [r.seq for r in trail.query(until=times[3])[0]] == [2, 1]  # exclusive
        naive_until = times[3].replace(tzinfo=None)  # naive means UTC
        assert [r.seq for r in trail.query(until=naive_until, since=times[2])[0]] == [2]
        assert trail.query(since=times[9] + timedelta(microseconds=1))[0] == []
        d = trail.query(actor="bob", category="change")[0][0].to_dict()
        assert d["time"] == times[9].strftime("%Y-%m-%dT%H:%M:%S.%fZ") and d["seq"] == 9 and len(d["hash"]) == 64
        assert json.loads(json.dumps(d)) == d

    def test_query_rejects_bad_arguments(self, trail: AuditTrail) -> None:
        with pytest.raises(BadRequest, match="page_size"):
            trail.query(page_size=0)
        with pytest.raises(BadRequest, match="page_size"):
            trail.query(page_size=100000)
        with pytest.raises(BadRequest, match="invalid audit category 'bogus'"):
            trail.query(category="bogus")
        with pytest.raises(BadRequest, match="page_token"):
            trail.query(page_token="!!!")

    # ------------------------------------------------------------------ CEF
    def test_permission_denial_exports_as_cef(self, trail: AuditTrail) -> None:
        fill(trail, 2)
        seq = trail.security_event(
            "auth.denied", actor="bob", on_behalf_of="carol", service="drs", target="obj-9", request_id="req-77",
            client_addr="192.0.2.10", details={"operation": "PutObject", "reason": "permission denied"},
        )
        lines = list(trail.export_cef())
        assert len(lines) == 1  # request records are not security events
        header, ext = parse_cef(lines[0])
        assert header[4:] == ["auth.denied", "Permission denied", "7"]
        rec = trail.get(seq)
        assert rec is not None
        assert ext["rt"] == str(int(rec.time.timestamp() * 1000))
        assert (ext["suser"], ext["duser"], ext["src"], ext["outcome"]) == ("bob", "carol", "192.0.2.10", "denied")
        assert (ext["cs1Label"], ext["cs1"], ext["cs2"], ext["cn1"]) == ("requestId", "req-77", "obj-9", str(seq))

    def test_cef_injection_through_the_trail_stays_one_line(self, trail: AuditTrail) -> None:
        evil = "x\nCEF:0|HelixGate|helixgate|0|auth.session|ok|1|suser=admin\r|a=b\\"
        trail.security_event("auth.failed", actor=evil, service="core", target=evil, request_id=evil,
                             details={"reason": evil})
        [line] = list(trail.export_cef())
        _, ext = parse_cef(line)
        assert ext["suser"] == evil[:255]
        assert ext["cs2"] == evil and ext["cs1"] == evil
        assert ext["outcome"] == "denied"

    # ------------------------------------------------------------------ retention
    def test_purge_exports_then_removes_and_verify_still_passes(
        self, trail: AuditTrail, audit_db: Database, clock: Clock, tmp_path: Path
    ) -> None:
        fill(trail, 7)  # seq 1..7 at T0+1s..T0+7s
        clock.now = T0 + timedelta(days=300)
        fill(trail, 5)  # seq 8..12
        export = tmp_path / "archive" / "audit-1.jsonl"
        cutoff = retention_cutoff(270, now=T0 + timedelta(days=300))
        assert trail.purge(older_than=cutoff, export_path=export) == 7

        lines = [json.loads(x) for x in export.read_text().splitlines()]
        assert [x["seq"] for x in lines] == list(range(1, 8))
        assert lines[0]["prev_hash"] == GENESIS_HASH
        assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))
        assert stat.S_IMODE(export.stat().st_mode) == 0o600
        remaining, _ = trail.query(order="oldest")
        assert [r.seq for r in remaining] == list(range(8, 13))
        assert remaining[0].prev_hash == lines[-1]["hash"]

        report = trail.verify()
        assert report.ok, report.problems
        assert (report.anchor_seq, report.first_seq, report.last_seq) == (7, 8, 12)

        # Appends continue; a second purge chains from the first anchor.
        assert trail.record(category="request", action="x", outcome="success", actor="a", service="core") == 13
        assert trail.purge(older_than=clock.now + timedelta(days=1), export_path=tmp_path / "audit-2.jsonl") == 6
        assert trail.verify().ok
        assert trail.purge(older_than=clock.now + timedelta(days=1), export_path=tmp_path / "audit-3.jsonl") == 0
        assert not (tmp_path / "audit-3.jsonl").exists()
        assert trail.record(category="request", action="x", outcome="success", actor="a", service="core") == 14
        assert trail.verify().ok

    def test_tampering_after_purge_is_still_detected(
        self, trail: AuditTrail, audit_db: Database, clock: Clock, tmp_path: Path
    ) -> None:
        fill(trail, 4)
        clock.now = T0 + timedelta(days=400)
        fill(trail, 4)  # seq 5..8
        assert trail.purge(older_than=T0 + timedelta(days=1), export_path=tmp_path / "a.jsonl") == 4
        sql(audit_db, "UPDATE core_audit_records SET target = 'other' WHERE seq = 6")
        sql(audit_db, "DELETE FROM core_audit_records WHERE seq = 5")
        problems = trail.verify().problems
        assert any(p.startswith("record seq 6: seq 5 missing") for p in problems), problems
        assert any(p.startswith("record seq 6: content hash mismatch") for p in problems), problems

    def test_forged_purge_anchor_is_detected(
        self, trail: AuditTrail, audit_db: Database, clock: Clock, tmp_path: Path
    ) -> None:
        fill(trail, 3)
        clock.now = T0 + timedelta(days=400)
        fill(trail, 3)
        trail.purge(older_than=T0 + timedelta(days=1), export_path=tmp_path / "a.jsonl")
        # Pretend more was purged legitimately, hiding the deletion of seq 4.
        sql(audit_db, "DELETE FROM core_audit_records WHERE seq = 4")
        sql(audit_db, "UPDATE core_audit_anchor SET seq = 4, hash = :h", h=head_hash(audit_db, 5))
        problems = trail.verify().problems
        assert "purge anchor seq 4: signature does not verify (forged or altered)" in problems
        assert any(p.startswith("record seq 5: seq 1..4 missing") for p in problems), problems

    def test_purge_refuses_to_destroy_evidence_of_tampering(
        self, trail: AuditTrail, audit_db: Database, clock: Clock, tmp_path: Path
    ) -> None:
        fill(trail, 4)
        clock.now = T0 + timedelta(days=400)
        fill(trail, 2)
        sql(audit_db, "UPDATE core_audit_records SET actor = 'mallory' WHERE seq = 2")
        with pytest.raises(IntegrityError, match="audit chain broken at seq 2"):
            trail.purge(older_than=T0 + timedelta(days=1), export_path=tmp_path / "a.jsonl")
        assert not (tmp_path / "a.jsonl").exists()
        assert trail.query(order="oldest", page_size=1)[0][0].seq == 1

    # ------------------------------------------------------------------ sanitizing
    def test_secrets_in_details_are_redacted(self, trail: AuditTrail, audit_db: Database) -> None:
        jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlc2VjcmV0"
        seq = trail.record(
            category="request", action="wes.run.create", outcome="success", actor="bob", service="wes",
            details={
                "Authorization": "Bearer hunter2-token",
                "PASSWORD": "hunter2",
                "client_secret": "s3cr3t-value",
                "X-Api-Key": "ak-123456",
                "key": "raw-key-material",
                "nested": {"access_token": "tok-abcdef", "refresh-token": "tok-ghijk", "ok": 1,
                           "list": [{"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}]},
                "header_line": f"authorization: Bearer {jwt}",
                "note": "plain text stays",
                "data": b"\x00\x01binary",
                "nul": "a\x00b",
            },
        )
        rec = trail.get(seq)
        assert rec is not None
        assert rec.details == {
            "nested": {"ok": 1, "list": [{}]},
            "header_line": "authorization: Bearer [REDACTED JWT]",
            "note": "plain text stays",
            "data": "<8 bytes>",
            "nul": "a\ufffdb",
        }
        raw = sql(audit_db, "SELECT details FROM core_audit_records WHERE seq = :s", s=seq).scalar_one()
        for secret in ("hunter2", "s3cr3t", "ak-123456", "raw-key-material", "tok-", "BEGIN PRIVATE", jwt[:20]):
            assert secret not in raw
        assert trail.verify().ok

    def test_long_values_are_bounded(self, trail: AuditTrail) -> None:
        seq = trail.record(category="request", action="a" * 500, outcome="success", actor="u" * 1000,
                           service="core", target="t" * 5000, details={"big": "x" * 10000, "many": list(range(500))})
        rec = trail.get(seq)
        assert rec is not None
        assert len(rec.action) == 128 and len(rec.actor) == 255 and rec.target is not None and len(rec.target) == 512
        assert len(rec.details["big"]) == 1024 and rec.details["big"].endswith("...(truncated)")
        assert len(rec.details["many"]) == 101 and rec.details["many"][-1] == "...(400 more items)"
        assert trail.verify().ok


class TestAuditChainSQLite(AuditChainContract):
    @pytest.fixture()
    def audit_db(self, tmp_path: Path) -> Iterator[Database]:
        db = Database(f"sqlite:///{tmp_path / 'audit.db'}")
        Base.metadata.create_all(db.engine)
        yield db
        db.dispose()


# ---------------------------------------------------------------------- SQLite-only / no-DB unit tests
@pytest.fixture()
def sqlite_trail(tmp_path: Path) -> Iterator[AuditTrail]:
    db = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(db.engine)
    yield AuditTrail(db, tmp_path / "keys", checkpoint_every=3)
    db.dispose()


def test_signing_key_is_created_private_and_reused(sqlite_trail: AuditTrail, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / KEY_FILENAME
    assert not key_file.exists()
    fill(sqlite_trail, 3)  # third record triggers a checkpoint, which needs the key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    pem = key_file.read_bytes()
    again = AuditTrail(sqlite_trail.db, tmp_path / "keys")
    assert again.key_id == sqlite_trail.key_id
    assert key_file.read_bytes() == pem
    assert "PRIVATE" not in again.public_key_pem()
    assert str(tmp_path) in repr(again) and "PRIVATE" not in repr(again)


def test_group_readable_key_is_refused(sqlite_trail: AuditTrail, tmp_path: Path) -> None:
    fill(sqlite_trail, 3)
    key_file = tmp_path / "keys" / KEY_FILENAME
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigurationError, match="expected mode 0600, found 0644"):
        AuditTrail(sqlite_trail.db, tmp_path / "keys").public_key_pem()
    # A due checkpoint that cannot be signed never costs the record itself.
    loose = AuditTrail(sqlite_trail.db, tmp_path / "keys", checkpoint_every=1)
    assert fill(loose, 1) == [4]
    assert [c.seq for c in loose.checkpoints()] == [3]
    with pytest.raises(ConfigurationError, match="expected mode 0600"):
        loose.checkpoint()


def test_verify_without_the_signing_key_reports_every_signed_item(sqlite_trail: AuditTrail, tmp_path: Path) -> None:
    fill(sqlite_trail, 6)
    (tmp_path / "keys" / KEY_FILENAME).unlink()
    problems = AuditTrail(sqlite_trail.db, tmp_path / "keys").verify().problems
    assert len(problems) == 2 and all("signing key" in p and "is missing" in p for p in problems)
    assert not (tmp_path / "keys" / KEY_FILENAME).exists()  # verify never mints a new key


def test_checkpoint_signed_by_another_key_is_reported(sqlite_trail: AuditTrail, tmp_path: Path) -> None:
    fill(sqlite_trail, 3)
    other = AuditTrail(sqlite_trail.db, tmp_path / "other-keys")
    assert other.key_id != sqlite_trail.key_id  # creates the other key
    problems = other.verify().problems
    assert problems == [f"checkpoint seq 3: signed by unknown key {sqlite_trail.key_id} (expected {other.key_id})"]


def test_purge_never_overwrites_an_archive(sqlite_trail: AuditTrail, tmp_path: Path) -> None:
    fill(sqlite_trail, 2)
    existing = tmp_path / "a.jsonl"
    existing.write_text("keep me\n")
    with pytest.raises(Conflict, match="already exists"):
        sqlite_trail.purge(older_than=datetime.now(UTC) + timedelta(days=1), export_path=existing)
    assert existing.read_text() == "keep me\n"
    assert sqlite_trail.verify().records_checked == 2


def test_missing_head_row_never_restarts_the_chain(sqlite_trail: AuditTrail) -> None:
    fill(sqlite_trail, 2)
    sql(sqlite_trail.db, "DELETE FROM core_audit_head")
    assert any("chain head row is missing" in p for p in sqlite_trail.verify().problems)
    with pytest.raises(IntegrityError, match="chain head is missing"):
        fill(sqlite_trail, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"category": "gossip"}, "invalid audit category 'gossip'"),
        ({"outcome": "maybe"}, "invalid audit outcome 'maybe'"),
        ({"service": "ftp|cef"}, "invalid audit service 'ftp|cef'"),  # would break the CEF header
        ({"service": "Drs"}, "invalid audit service 'Drs'"),
        ({"service": ""}, "invalid audit service ''"),
        ({"severity": 11}, "invalid audit severity 11"),
        ({"action": "  "}, "non-empty"),
    ],
)
def test_record_rejects_invalid_fields(sqlite_trail: AuditTrail, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"category": "request", "action": "x", "outcome": "success", "actor": "a", "service": "core"}
    with pytest.raises(BadRequest, match=message):
        sqlite_trail.record(**{**args, **kwargs})
    assert sqlite_trail.verify().records_checked == 0


def test_any_declared_service_name_is_recorded(sqlite_trail: AuditTrail) -> None:
    # the core knows no service: a new service's records need no change to the trail
    seq = sqlite_trail.record(category="change", action="x", outcome="success", actor="a", service="beacon")
    record = sqlite_trail.get(seq)
    assert record is not None and record.service == "beacon"
    assert sqlite_trail.verify().ok


def test_default_severities(sqlite_trail: AuditTrail) -> None:
    a = sqlite_trail.record(category="request", action="x", outcome="success", actor=None, service="core")
    b = sqlite_trail.record(category="request", action="x", outcome="error", actor=None, service="core")
    c = sqlite_trail.security_event("integrity.failed", outcome="failure")
    sev = [r.severity for r in (sqlite_trail.get(a), sqlite_trail.get(b), sqlite_trail.get(c)) if r]
    assert sev == [1, 6, 7]


def test_sanitize_handles_non_json_values_and_depth() -> None:
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(10):
        cur["d"] = {}
        cur = cur["d"]
    out = sanitize_details({"when": datetime(2025, 1, 1, tzinfo=UTC), "path": Path("/x"), "nan": float("nan"),
                            "deep": deep, "t": (1, 2)})
    assert out["when"] == "2025-01-01T00:00:00.000000Z"
    assert out["path"] == "/x" and out["nan"] == "nan" and out["t"] == [1, 2]
    assert "...(nested too deep)" in json.dumps(out)
    huge = sanitize_details({f"k{i}": "v" * 1000 for i in range(90)})
    assert huge["truncated"] is True and huge["original_size"] > 16 * 1024


def test_retention_cutoff() -> None:
    now = datetime(2025, 10, 1, tzinfo=UTC)
    assert retention_cutoff(270, now=now) == now - timedelta(days=270)
    with pytest.raises(ConfigurationError, match="audit_retention_days"):
        retention_cutoff(0)
