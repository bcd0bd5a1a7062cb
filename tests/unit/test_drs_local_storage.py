"""Local encrypted object store: format, tamper detection, rotation, keyring, memory."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import stat
import threading
import tracemalloc
from pathlib import Path

import pytest

from drs_store import local_storage
from drs_store.backends import make_storage
from drs_store.keyring import Keyring
from drs_store.local_storage import HEADER_SIZE, TAG_SIZE, LocalStorage
from drs_store.s3_storage import S3Storage
from drs_store.storage import MissingData, ObjectStorage, StoredBlob
from helixgate.config import Settings
from helixgate.errors import BadRequest, ConfigurationError, IntegrityError, PayloadTooLarge

SMALL = 4096  # small chunks keep multi-chunk tests fast


class GeneratedStream(io.RawIOBase):
    """``size`` pseudo-random bytes produced on demand (never held in memory), hashed as read."""

    def __init__(self, size: int, *, max_read: int | None = None) -> None:
        self._left = size
        self._block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB pattern
        self._offset = 0
        self._max_read = max_read
        self.sha = hashlib.sha256()
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        self.reads += 1
        want = self._left if n is None or n < 0 else min(n, self._left)
        if self._max_read is not None:
            want = min(want, self._max_read)
        want = min(want, len(self._block) - self._offset)
        data = self._block[self._offset : self._offset + want]
        self._offset = (self._offset + want) % len(self._block)
        self._left -= want
        self.sha.update(data)
        return data


def _storage(tmp_path: Path, chunk_size: int = SMALL) -> LocalStorage:
    root = tmp_path / "drs"
    root.mkdir(exist_ok=True)
    return LocalStorage(root, keyring=Keyring(root / "keyring.json", env={}), chunk_size=chunk_size)


def _files(storage: LocalStorage, tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "drs" / "objects").rglob("*") if p.is_file())


def _blob_path(tmp_path: Path, blob: StoredBlob, suffix: str = ".blob") -> Path:
    return tmp_path / "drs" / "objects" / blob.location[:2] / f"{blob.location}{suffix}"


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.fixture()
def store(tmp_path: Path) -> LocalStorage:
    return _storage(tmp_path)


def test_is_an_object_storage(store: LocalStorage) -> None:
    assert isinstance(store, ObjectStorage)
    assert store.name == "local"


def test_put_hashes_encrypts_and_round_trips(store: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(5 * SMALL + 17)
    blob = store.put(io.BytesIO(data))
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert (blob.backend, blob.size, blob.external, blob.key_id) == (
        "local",
        len(data),
        False,
        store.keyring.active_key_id,
    )
    assert b"".join(store.read_verified(blob)) == data
    stored = _blob_path(tmp_path, blob).read_bytes()
    assert data[:64] not in stored  # ciphertext, not plaintext
    assert len(stored) == HEADER_SIZE + len(data) + 6 * TAG_SIZE
    for path in _files(store, tmp_path) + [tmp_path / "drs" / "keyring.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_exact_multiple_of_chunk_size_has_no_empty_trailing_chunk(store: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(3 * SMALL)
    blob = store.put(io.BytesIO(data))
    assert _blob_path(tmp_path, blob).stat().st_size == HEADER_SIZE + len(data) + 3 * TAG_SIZE
    assert b"".join(store.read_verified(blob)) == data


def test_short_reads_are_assembled_into_full_chunks(store: LocalStorage) -> None:
    stream = GeneratedStream(3 * SMALL + 5, max_read=1000)
    blob = store.put(stream)  # type: ignore[arg-type]
    assert blob.sha256 == stream.sha.hexdigest()
    assert (
        hashlib.sha256(b"".join(store.open_range(blob, SMALL - 3, 2 * SMALL + 9))).hexdigest()
        == hashlib.sha256(b"".join(store.read_verified(blob))[SMALL - 3 : 2 * SMALL + 9]).hexdigest()
    )


def test_malformed_client_checksum_is_rejected_before_reading(store: LocalStorage, tmp_path: Path) -> None:
    stream = GeneratedStream(100)
    with pytest.raises(BadRequest):
        store.put(stream, expected_sha256="not-a-digest")  # type: ignore[arg-type]
    assert stream.reads == 0
    assert _files(store, tmp_path) == []


def test_flipped_ciphertext_byte_fails_at_that_chunk(store: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(5 * SMALL)
    blob = store.put(io.BytesIO(data))
    _flip(_blob_path(tmp_path, blob), HEADER_SIZE + 2 * (SMALL + TAG_SIZE) + 100)  # inside chunk 2
    received = bytearray()
    with pytest.raises(IntegrityError, match="chunk 2 of 5") as info:
        for piece in store.read_verified(blob):
            received += piece
    assert info.value.subject == blob.location
    # Only authenticated bytes ever leave, and read_verified holds the latest piece back: at most
    # chunks 0 and 1 (here none: the five small chunks make one piece of a read batch).
    assert data[: 2 * SMALL].startswith(bytes(received)) and len(received) < 2 * SMALL
    # Range reads decrypt only the chunks they need: chunk 0/1 are intact, chunk 2 is not.
    assert b"".join(store.open_range(blob, 10, 2 * SMALL)) == data[10 : 2 * SMALL]
    with pytest.raises(IntegrityError):
        b"".join(store.open_range(blob, 2 * SMALL, 2 * SMALL + 1))


def test_flipped_tag_and_header_are_detected(store: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(2 * SMALL)
    a, b = store.put(io.BytesIO(data)), store.put(io.BytesIO(data))
    _flip(_blob_path(tmp_path, a), HEADER_SIZE + SMALL + 3)  # chunk 0 tag
    _flip(_blob_path(tmp_path, b), 13)  # nonce prefix in the header
    for blob in (a, b):
        with pytest.raises(IntegrityError):
            b"".join(store.read_verified(blob))


def test_reordered_chunks_are_detected(store: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(4 * SMALL)
    blob = store.put(io.BytesIO(data))
    path = _blob_path(tmp_path, blob)
    raw = path.read_bytes()
    stride = SMALL + TAG_SIZE
    c1, c2 = (
        raw[HEADER_SIZE + stride : HEADER_SIZE + 2 * stride],
        raw[HEADER_SIZE + 2 * stride : HEADER_SIZE + 3 * stride],
    )
    path.write_bytes(raw[: HEADER_SIZE + stride] + c2 + c1 + raw[HEADER_SIZE + 3 * stride :])
    with pytest.raises(IntegrityError, match="chunk 1"):
        b"".join(store.read_verified(blob))


def test_truncation_at_a_chunk_boundary_is_detected(store: LocalStorage, tmp_path: Path) -> None:
    data = os.urandom(3 * SMALL + 100)
    blob = store.put(io.BytesIO(data))
    path = _blob_path(tmp_path, blob)
    path.write_bytes(path.read_bytes()[: HEADER_SIZE + 3 * (SMALL + TAG_SIZE)])  # drop the final chunk
    with pytest.raises(IntegrityError, match="wrong length"):
        b"".join(store.read_verified(blob))
    # Even a database record agreeing with the truncated length fails: the size is bound
    # into the wrapped key (v2), and chunk 2 was not final.
    lying = dataclasses.replace(blob, size=3 * SMALL)
    with pytest.raises(IntegrityError, match="failed authentication"):
        b"".join(store.open_range(lying, 0, 3 * SMALL))


def test_swapped_wrapped_keys_are_detected(store: LocalStorage, tmp_path: Path) -> None:
    a = store.put(io.BytesIO(b"a" * 100))
    b = store.put(io.BytesIO(b"b" * 100))
    ka, kb = _blob_path(tmp_path, a, ".key"), _blob_path(tmp_path, b, ".key")
    key_a, key_b = ka.read_bytes(), kb.read_bytes()
    ka.write_bytes(key_b)
    kb.write_bytes(key_a)
    with pytest.raises(IntegrityError, match="wrapped data key"):
        b"".join(store.read_verified(a))


def test_whole_object_digest_mismatch_reports_expected_and_actual(store: LocalStorage) -> None:
    data = os.urandom(3 * SMALL)
    blob = store.put(io.BytesIO(data))
    wrong = dataclasses.replace(blob, sha256="0" * 64)
    received = bytearray()
    with pytest.raises(IntegrityError) as info:
        for piece in store.read_verified(wrong):
            received += piece
    assert (info.value.expected, info.value.actual) == ("0" * 64, blob.sha256)
    assert len(received) < len(data)  # the last piece is withheld


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, None), (0, 1), (SMALL - 1, SMALL + 1), (SMALL, 2 * SMALL), (1, 3 * SMALL + 6), (3 * SMALL, None), (5, 10**9)],
)
def test_range_reads_equal_the_plaintext_slice(store: LocalStorage, start: int, end: int | None) -> None:
    data = os.urandom(3 * SMALL + 7)
    blob = store.put(io.BytesIO(data))
    assert b"".join(store.open_range(blob, start, end)) == data[start:end]


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (10, 5), (3 * SMALL + 8, None)])
def test_invalid_ranges_are_bad_requests(store: LocalStorage, start: int, end: int | None) -> None:
    blob = store.put(io.BytesIO(os.urandom(3 * SMALL + 7)))
    with pytest.raises(BadRequest):
        store.open_range(blob, start, end)


def test_delete_removes_ciphertext_and_key(store: LocalStorage, tmp_path: Path) -> None:
    blob = store.put(io.BytesIO(b"x" * 10))
    store.delete(blob)
    assert _files(store, tmp_path) == []
    with pytest.raises(MissingData, match="missing"):  # the row would still name it: an integrity failure
        store.read_verified(blob)
    store.delete(blob)  # idempotent


def test_locations_are_validated(store: LocalStorage) -> None:
    evil = StoredBlob("local", "../../keyring", 1, "0" * 64, None)
    with pytest.raises(BadRequest):
        store.read_verified(evil)
    with pytest.raises(ConfigurationError, match="s3 backend"):
        store.read_verified(dataclasses.replace(evil, backend="s3"))


def test_local_backend_has_no_external_registration_or_presign(store: LocalStorage) -> None:
    with pytest.raises(BadRequest):
        store.register_external("s3://bucket/key")
    assert store.presign(store.put(io.BytesIO(b"x")), 60) is None


# ------------------------------------------------------------------ rotation
def test_rotation_rewraps_keys_without_touching_ciphertext(store: LocalStorage, tmp_path: Path) -> None:
    payloads = [os.urandom(n) for n in (0, 1, SMALL, 3 * SMALL + 5)]
    blobs = {store.put(io.BytesIO(p)): p for p in payloads}
    old_id = store.keyring.active_key_id
    before = {b: (_blob_path(tmp_path, b).read_bytes(), _blob_path(tmp_path, b, ".key").read_text()) for b in blobs}

    new_id = store.rotate_master_key()

    assert new_id != old_id and store.keyring.active_key_id == new_id
    keyring_doc = json.loads((tmp_path / "drs" / "keyring.json").read_text())
    assert [k["id"] for k in keyring_doc["keys"]] == [new_id]  # old key removed from use
    for blob, (body, keyfile) in before.items():
        assert _blob_path(tmp_path, blob).read_bytes() == body  # data bytes unchanged
        after = json.loads(_blob_path(tmp_path, blob, ".key").read_text())
        assert after["key_id"] == new_id and after["wrapped"] != json.loads(keyfile)["wrapped"]
        assert b"".join(store.read_verified(blob)) == blobs[blob]
    # A fresh process (new keyring instance) reads everything with only the new key.
    fresh = _storage(tmp_path)
    assert fresh.keyring.key_ids == (new_id,)
    for blob, payload in blobs.items():
        assert b"".join(fresh.read_verified(blob)) == payload
    assert store.put(io.BytesIO(b"after")).key_id == new_id


def test_rotation_in_another_process_is_picked_up(tmp_path: Path) -> None:
    first, second = _storage(tmp_path), _storage(tmp_path)
    blob = first.put(io.BytesIO(b"data" * 5000))
    new_id = second.rotate_master_key()
    # ``first`` still holds the old keyring in memory: it must reload instead of failing.
    assert b"".join(first.read_verified(blob)) == b"data" * 5000
    assert first.put(io.BytesIO(b"later")).key_id == new_id


def test_rotation_is_safe_during_concurrent_puts(store: LocalStorage) -> None:
    stored: list[tuple[StoredBlob, bytes]] = []
    errors: list[Exception] = []

    def writer() -> None:
        try:
            for _ in range(15):
                data = os.urandom(SMALL + 3)
                stored.append((store.put(io.BytesIO(data)), data))
        except Exception as exc:  # noqa: BLE001 - a thread must report, not swallow
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(3):
        store.rotate_master_key()
    for t in threads:
        t.join()
    final = store.rotate_master_key()
    assert errors == []
    assert store.keyring.key_ids == (final,)
    for blob, data in stored:
        assert b"".join(store.read_verified(blob)) == data


# ------------------------------------------------------------------- keyring
def test_keyring_never_shows_key_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _storage(tmp_path)
    store.rotate_master_key()
    doc = json.loads((tmp_path / "drs" / "keyring.json").read_text())
    secret_b64 = doc["keys"][0]["key"]
    secret = base64.b64decode(secret_b64)
    texts = [repr(store), repr(store.keyring), str(store.keyring), caplog.text]
    for text in texts:
        assert secret_b64 not in text and secret.hex() not in text and repr(secret) not in text


def test_keyring_file_must_be_private(tmp_path: Path) -> None:
    _storage(tmp_path)
    path = tmp_path / "drs" / "keyring.json"
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="0600"):
        Keyring(path, env={})


def test_corrupt_keyring_error_does_not_quote_its_content(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text('{"version": 1, "keys": [{"id": "k1", "key": "c2VjcmV0c2VjcmV0"}], "active": "k1"')
    path.chmod(0o600)
    with pytest.raises(ConfigurationError) as info:
        Keyring(path, env={})
    assert "c2VjcmV0" not in str(info.value)


def test_master_key_from_environment(tmp_path: Path) -> None:
    key = os.urandom(32)
    env = {"HELIXGATE_MASTER_KEY": base64.b64encode(key).decode(), "HELIXGATE_MASTER_KEY_ID": "prod-2024"}
    store = LocalStorage.from_data_dir(tmp_path, env=env)
    assert store.keyring.active_key_id == "prod-2024"
    assert not (tmp_path / "drs" / "keyring.json").exists()  # the env key is never written to disk
    blob = store.put(io.BytesIO(b"payload"))
    assert blob.key_id == "prod-2024"
    assert b"".join(LocalStorage.from_data_dir(tmp_path, env=env).read_verified(blob)) == b"payload"
    with pytest.raises(ConfigurationError, match="prod-2024"):
        b"".join(LocalStorage.from_data_dir(tmp_path, env={}).read_verified(blob))


def test_switching_to_an_environment_key_and_rotating(tmp_path: Path) -> None:
    file_store = LocalStorage.from_data_dir(tmp_path, env={})
    blob = file_store.put(io.BytesIO(b"old data"))
    env = {"HELIXGATE_MASTER_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(), "HELIXGATE_MASTER_KEY_ID": "env1"}
    env_store = LocalStorage.from_data_dir(tmp_path, env=env)
    assert b"".join(env_store.read_verified(blob)) == b"old data"  # file keys still unwrap
    assert env_store.rotate_master_key() == "env1"
    assert env_store.keyring.key_ids == ("env1",)
    assert b"".join(LocalStorage.from_data_dir(tmp_path, env=env).read_verified(blob)) == b"old data"


@pytest.mark.parametrize(
    ("value", "key_id", "message"),
    [
        ("c2hvcnQ=", "k1", "expected 32 bytes"),
        ("!!!not base64 at all, definitely secret!!!", "k1", "HELIXGATE_MASTER_KEY"),
        (base64.b64encode(b"k" * 32).decode(), "", "HELIXGATE_MASTER_KEY_ID"),
        (base64.b64encode(b"k" * 32).decode(), "bad id/with slash", "invalid master key id"),
    ],
)
def test_bad_environment_keys_fail_without_echoing_them(tmp_path: Path, value: str, key_id: str, message: str) -> None:
    env = {"HELIXGATE_MASTER_KEY": value, "HELIXGATE_MASTER_KEY_ID": key_id}
    with pytest.raises(ConfigurationError, match=message) as info:
        Keyring(tmp_path / "keyring.json", env=env)
    assert value not in str(info.value)


def test_environment_key_id_colliding_with_a_file_key_is_refused(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keyring.json", env={})
    env = {
        "HELIXGATE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "HELIXGATE_MASTER_KEY_ID": ring.active_key_id,
    }
    with pytest.raises(ConfigurationError, match="different key"):
        Keyring(tmp_path / "keyring.json", env=env)


# -------------------------------------------------------------- size, memory
def test_size_limit_raises_and_stores_nothing(store: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge):
        store.put(GeneratedStream(10 * SMALL), max_bytes=3 * SMALL)  # type: ignore[arg-type]
    assert _files(store, tmp_path) == []
    assert store.put(io.BytesIO(b"y" * 3 * SMALL), max_bytes=3 * SMALL).size == 3 * SMALL


def test_memory_stays_flat_for_a_256_mib_stream(tmp_path: Path) -> None:
    store = _storage(tmp_path, chunk_size=1024 * 1024)
    stream = GeneratedStream(256 * 1024 * 1024)
    tracemalloc.start()
    try:
        blob = store.put(stream)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the batch being sealed and read_full's assembly of the next: bounded, not 256 MiB
    assert peak < 3 * local_storage._BATCH_BYTES < 256 * 1024 * 1024 // 8, f"peak {peak} bytes"
    assert blob.size == 256 * 1024 * 1024 and blob.sha256 == stream.sha.hexdigest()


# ------------------------------------------------------------------- factory
def test_make_storage_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HELIXGATE_MASTER_KEY", raising=False)
    storage = make_storage(Settings(data_dir=tmp_path))
    assert isinstance(storage, LocalStorage)
    assert (tmp_path / "drs" / "keyring.json").exists()


def test_make_storage_s3_does_not_touch_the_network(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_backend="s3",
        s3_bucket="helixgate-data",
        s3_endpoint_url="http://127.0.0.1:1",
        s3_sse="aws:kms",
        s3_kms_key_id="alias/helixgate",
    )
    storage = make_storage(settings)
    assert isinstance(storage, S3Storage) and storage.name == "s3"
    with pytest.raises(ConfigurationError, match="s3_bucket"):
        make_storage(Settings(data_dir=tmp_path, storage_backend="s3"))


def test_stale_upload_temporaries_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    import os
    import time as _time

    from drs_store.local_storage import LocalStorage

    storage = LocalStorage.from_data_dir(tmp_path)
    folder = tmp_path / "drs" / "objects" / "ab"
    folder.mkdir(parents=True)
    dead, live = folder / ".abc.blob.tmp", folder / ".abd.blob.tmp"
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    old = _time.time() - 7200
    os.utime(dead, (old, old))
    assert storage.sweep_stale_temporaries() == 1
    assert not dead.exists() and live.exists()


# ---------------------------------------------------------------- identity binding (v2) and v1 blobs
def _put_v1(store: LocalStorage, data: bytes, chunk: int = SMALL) -> StoredBlob:
    """A blob in the v1 format (as written before the identity binding), built by hand."""
    import secrets
    import struct
    import uuid

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    location = uuid.uuid4().hex
    blob_path, key_path = store._paths(location)
    blob_path.parent.mkdir(exist_ok=True)
    header = local_storage.MAGIC + struct.pack(">I", chunk) + secrets.token_bytes(4)
    data_key = AESGCM.generate_key(bit_length=256)
    aes = AESGCM(data_key)
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    body = b"".join(
        aes.encrypt(header[12:16] + struct.pack(">Q", i), p, header + struct.pack(">QB", i, i == len(pieces) - 1))
        for i, p in enumerate(pieces)
    )
    blob_path.write_bytes(header + body)
    key_id = store._write_key_file_v1(key_path, location, header, data_key)
    return StoredBlob("local", location, len(data), hashlib.sha256(data).hexdigest(), key_id)


def test_new_blobs_use_format_v2_and_bind_the_object_id(store: LocalStorage, tmp_path: Path) -> None:
    blob = store.put(io.BytesIO(b"payload" * 1000), object_id="obj-a")
    assert _blob_path(tmp_path, blob).read_bytes()[:8] == local_storage.MAGIC_V2
    assert blob.object_id == "obj-a"
    assert b"".join(store.read_verified(blob)) == b"payload" * 1000


def test_v1_blobs_stay_readable_and_survive_rotation(store: LocalStorage) -> None:
    data = os.urandom(3 * SMALL + 11)
    old = _put_v1(store, data)
    assert b"".join(store.read_verified(old)) == data
    assert b"".join(store.open_range(old, SMALL - 3, SMALL + 5)) == data[SMALL - 3 : SMALL + 5]
    store.rotate_master_key()
    assert b"".join(store.read_verified(old)) == data


def test_swapped_rows_fail_authentication(store: LocalStorage) -> None:
    """Row of object A pointing at B's bytes (location, size and checksum moved together)."""
    a = store.put(io.BytesIO(b"A" * 5000), object_id="obj-a")
    b = store.put(io.BytesIO(b"B" * 5000), object_id="obj-b")
    swapped = dataclasses.replace(b, object_id=a.object_id)
    with pytest.raises(IntegrityError, match="failed authentication"):
        b"".join(store.read_verified(swapped))
    with pytest.raises(IntegrityError):
        b"".join(store.open_range(swapped, 0, 10))


def test_swapped_blob_files_fail_authentication(store: LocalStorage, tmp_path: Path) -> None:
    a = store.put(io.BytesIO(b"A" * 5000), object_id="obj-a")
    b = store.put(io.BytesIO(b"B" * 5000), object_id="obj-b")
    for suffix in (".blob", ".key"):
        pa, pb = _blob_path(tmp_path, a, suffix), _blob_path(tmp_path, b, suffix)
        ra, rb = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(rb)
        pb.write_bytes(ra)
    for blob in (a, b):
        with pytest.raises(IntegrityError):
            b"".join(store.read_verified(blob))


def test_size_is_authenticated(store: LocalStorage) -> None:
    blob = store.put(io.BytesIO(b"x" * 5000), object_id="obj-a")
    with pytest.raises(IntegrityError):
        b"".join(store.open_range(dataclasses.replace(blob, size=4000), 0, 10))


def test_missing_key_file_is_an_integrity_failure(store: LocalStorage, tmp_path: Path) -> None:
    blob = store.put(io.BytesIO(b"x" * 10), object_id="obj-a")
    _blob_path(tmp_path, blob, ".key").unlink()
    with pytest.raises(MissingData, match="missing"):
        b"".join(store.read_verified(blob))


def test_rotation_keeps_v2_binding(store: LocalStorage) -> None:
    blob = store.put(io.BytesIO(b"y" * 9000), object_id="obj-a")
    store.rotate_master_key()
    assert b"".join(store.read_verified(blob)) == b"y" * 9000
    with pytest.raises(IntegrityError):
        b"".join(store.read_verified(dataclasses.replace(blob, object_id="obj-b")))
