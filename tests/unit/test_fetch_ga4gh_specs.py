"""scripts/fetch_ga4gh_specs.py against a local HTTP server laid out like raw.githubusercontent.com:
a good mirror fills the cache, a second run is a cache hit (no request), a file with another
SHA-256 or a missing file fails naming it and stores nothing; the resolver refuses a directory
with a missing or altered document, naming the file, and so does scripts/build_openapi.py."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.fixtures.ga4gh_schemas import pinned_specs, specs_dir

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fetch_ga4gh_specs.py"


class Mirror:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                mirror.requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, spec: object, data: bytes) -> Path:
        target = self.root / spec.repo / spec.commit / spec.upstream_path  # type: ignore[attr-defined]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    """Every pinned document (from the verified specs directory) served under its upstream URL path."""
    m = Mirror(tmp_path / "upstream")
    for spec in pinned_specs.SPECS:
        m.put(spec, (specs_dir() / spec.path).read_bytes())
    yield m
    m.server.shutdown()
    m.server.server_close()


def fetch(dest: Path, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIXGATE_GA4GH")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dest", str(dest), "--base-url", base_url, "--timeout", "20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_good_mirror_fills_the_cache_then_hits_it(mirror: Mirror, tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    first = fetch(dest, mirror.url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(dest.resolve())
    for spec in pinned_specs.SPECS:
        assert (dest / spec.path).read_bytes() == (specs_dir() / spec.path).read_bytes()
    assert sorted(mirror.requests) == sorted(
        f"/{s.repo}/{s.commit}/{s.upstream_path}" for s in pinned_specs.SPECS
    ), "each document is requested once, at its pinned commit"
    mirror.requests.clear()
    second = fetch(dest, mirror.url)
    assert second.returncode == 0, second.stderr
    assert mirror.requests == [], "a valid cache is not downloaded again"
    assert second.stderr.count("cached:") == len(pinned_specs.SPECS)


def test_wrong_checksum_is_refused_and_not_stored(mirror: Mirror, tmp_path: Path) -> None:
    spec = pinned_specs.SPECS[1]
    mirror.put(spec, (specs_dir() / spec.path).read_bytes() + b"\n# tampered\n")
    dest = tmp_path / "cache"
    r = fetch(dest, mirror.url)
    assert r.returncode == 1
    assert spec.path in r.stderr and "expected " + spec.sha256 in r.stderr, r.stderr
    assert not (dest / spec.path).exists()


def test_missing_upstream_file_fails_naming_it(mirror: Mirror, tmp_path: Path) -> None:
    spec = pinned_specs.SPECS[0]
    (mirror.root / spec.repo / spec.commit / spec.upstream_path).unlink()
    r = fetch(tmp_path / "cache", mirror.url)
    assert r.returncode == 1
    assert f"cannot download {spec.url(mirror.url)}: HTTP 404" in r.stderr, r.stderr


def test_unreachable_upstream_says_the_network_is_needed(tmp_path: Path) -> None:
    r = fetch(tmp_path / "cache", "http://127.0.0.1:9")  # discard port: connection refused
    assert r.returncode == 1
    assert "network is needed" in r.stderr and "HELIXGATE_GA4GH_SPECS" in r.stderr, r.stderr


def test_corrupted_cache_entry_is_downloaded_again(mirror: Mirror, tmp_path: Path) -> None:
    dest = tmp_path / "cache"
    assert fetch(dest, mirror.url).returncode == 0
    spec = pinned_specs.SPECS[2]
    (dest / spec.path).write_bytes(b"openapi: 3.0.0\n")
    mirror.requests.clear()
    r = fetch(dest, mirror.url)
    assert r.returncode == 0, r.stderr
    assert mirror.requests == [f"/{spec.repo}/{spec.commit}/{spec.upstream_path}"]
    assert (dest / spec.path).read_bytes() == (specs_dir() / spec.path).read_bytes()


@pytest.fixture()
def copied_specs(tmp_path: Path) -> Path:
    copy = tmp_path / "specs"
    for spec in pinned_specs.SPECS:
        (copy / spec.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(specs_dir() / spec.path, copy / spec.path)
    return copy


def _build_check(specs: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELIXGATE_GA4GH_SPECS": str(specs)}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_openapi.py"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_override_directory_is_checked_file_by_file(copied_specs: Path) -> None:
    assert _build_check(copied_specs).returncode == 0
    spec = pinned_specs.SPECS[0]
    (copied_specs / spec.path).write_bytes((copied_specs / spec.path).read_bytes().replace(b"1.1.0", b"1.1.1"))
    missing = pinned_specs.SPECS[3]
    (copied_specs / missing.path).unlink()
    r = _build_check(copied_specs)
    assert r.returncode == 1
    assert f"sha256 mismatch: {copied_specs / spec.path}: expected {spec.sha256}" in r.stderr, r.stderr
    assert f"missing: {copied_specs / missing.path}" in r.stderr, r.stderr


def test_resolver_names_the_file(copied_specs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = pinned_specs.SPECS[2]
    (copied_specs / spec.path).unlink()
    monkeypatch.setenv("HELIXGATE_GA4GH_SPECS", str(copied_specs))
    with pytest.raises(pinned_specs.SpecError, match=f"missing: {copied_specs / spec.path}"):
        pinned_specs.resolve()


def test_default_is_the_cache_not_a_sibling_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HELIXGATE_GA4GH_SPECS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pinned_specs.specs_dir() == tmp_path / "xdg" / "helixgate" / "ga4gh-specs"
    with pytest.raises(pinned_specs.SpecError, match="fetch_ga4gh_specs.py"):
        pinned_specs.resolve()
