"""Key separation of the audit trail: a process without the checkpoint key (a WES worker)
appends to the chain and never opens or creates the key; the audit writer (the core API)
signs the checkpoints its records reached; verification needs only the public key."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from helixgate.audit import KEY_FILENAME, PUBLIC_KEY_FILENAME, AuditTrail, Checkpointer
from helixgate.db import Base, Database
from helixgate.errors import ConfigurationError
from tests.unit.test_audit_chain import fill, sql


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'audit.db'}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def test_a_keyless_writer_appends_without_ever_touching_the_key(db: Database, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    worker = AuditTrail(db, keys, checkpoint_every=3, signer=False)
    assert fill(worker, 7) == list(range(1, 8))  # crosses two checkpoint boundaries
    assert not keys.exists()  # nothing created: not the key, not even its directory
    assert worker.checkpoints() == []
    with pytest.raises(ConfigurationError, match="does not hold the audit checkpoint key"):
        worker.checkpoint()


def test_the_writer_signs_what_keyless_writers_reached_and_a_public_key_verifies_it(
    db: Database, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    core = AuditTrail(db, keys, checkpoint_every=3)
    worker = AuditTrail(db, keys, checkpoint_every=3, signer=False)
    fill(core, 1)
    fill(worker, 7)  # seq 2..8: boundaries 3 and 6 reached by the keyless writer
    signed = core.catch_up_checkpoints()
    assert [c.seq for c in signed] == [3, 6]
    assert core.catch_up_checkpoints() == []  # idempotent
    fill(core, 1)  # seq 9: the writer itself signs inline
    assert [c.seq for c in core.checkpoints()] == [3, 6, 9]
    # key files: private 0600, public beside it, directory 0700
    assert stat.S_IMODE((keys / KEY_FILENAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert b"PUBLIC KEY" in (keys / PUBLIC_KEY_FILENAME).read_bytes()
    # a verifier holding only the public key (the private key gone from its view)
    public_only = tmp_path / "public-only"
    public_only.mkdir()
    (public_only / PUBLIC_KEY_FILENAME).write_bytes((keys / PUBLIC_KEY_FILENAME).read_bytes())
    verifier = AuditTrail(db, public_only, checkpoint_every=3, signer=False)
    report = verifier.verify()
    assert report.ok, report.problems
    assert report.checkpoints_checked == 3
    assert not (public_only / KEY_FILENAME).exists()
    # and the public key still catches a rewrite of a checkpointed record
    sql(db, "UPDATE core_audit_checkpoints SET hash = :h WHERE seq = 6", h="0" * 64)
    problems = verifier.verify().problems
    assert any(p.startswith("checkpoint seq 6: signature does not verify") for p in problems), problems


def test_checkpointer_thread_signs_in_the_background(db: Database, tmp_path: Path) -> None:
    core = AuditTrail(db, tmp_path / "keys", checkpoint_every=2)
    worker = AuditTrail(db, tmp_path / "keys", checkpoint_every=2, signer=False)
    fill(worker, 4)
    checkpointer = Checkpointer(core, interval=0.05)
    checkpointer.start()
    try:
        for _ in range(200):
            if [c.seq for c in core.checkpoints()] == [2, 4]:
                break
            checkpointer._stop.wait(0.05)
    finally:
        checkpointer.stop()
    assert [c.seq for c in core.checkpoints()] == [2, 4]
    assert core.verify().ok
