"""OverlappedSha256: the same digest as hashlib, whatever the mix of piece sizes."""

from __future__ import annotations

import hashlib
import os
import threading

from helixgate.integrity import OverlappedSha256


def test_digest_equals_hashlib_over_small_and_large_pieces_in_order() -> None:
    pieces = [os.urandom(n) for n in (0, 10, 3 * 1024 * 1024, 5, 2 * 1024 * 1024 + 1, 1024 * 1024 - 1, 4096)]
    overlapped = OverlappedSha256()
    for piece in pieces:
        overlapped.update(piece)
    assert overlapped.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    overlapped.close()


def test_large_pieces_are_hashed_off_the_calling_thread() -> None:
    seen: set[int] = set()

    class Spy:
        def update(self, piece: bytes) -> None:
            seen.add(threading.get_ident())

    hasher = OverlappedSha256()
    hasher._sha = Spy()  # type: ignore[assignment]
    hasher.update(b"x" * (2 * 1024 * 1024))
    hasher.update(b"small")
    hasher.close()
    assert len(seen) == 2 and threading.get_ident() in seen  # one helper thread, one inline


def test_close_after_abandoning_a_stream_waits_for_the_piece_in_flight() -> None:
    hasher = OverlappedSha256()
    hasher.update(os.urandom(4 * 1024 * 1024))
    hasher.close()  # no error, nothing left running for this hasher
    assert hasher._pending is None
