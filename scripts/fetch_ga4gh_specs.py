#!/usr/bin/env python3
"""The official GA4GH OpenAPI documents HelixGate is built and tested against: where they come
from (pinned upstream commits), their SHA-256, and the one place that finds them on disk.

    python scripts/fetch_ga4gh_specs.py [--dest DIR] [--base-url URL]

downloads every pinned document that is missing or wrong in ``DIR`` (default: the cache,
``$XDG_CACHE_HOME/helixgate/ga4gh-specs`` or ``~/.cache/helixgate/ga4gh-specs``), checks its
SHA-256 before it is stored (atomically), and prints the directory on stdout. Documents already
cached with the right checksum are not downloaded again. ``--base-url`` (or
``HELIXGATE_GA4GH_SPECS_BASE_URL``) replaces ``https://raw.githubusercontent.com`` — a mirror
laid out like it (``<owner>/<repo>/<commit>/<path>``); the checksums still decide.

Everything that reads the documents (``scripts/build_openapi.py``, ``tests/fixtures/ga4gh_schemas.py``
and the conformance tests through it) calls :func:`resolve`: ``HELIXGATE_GA4GH_SPECS`` when set,
else the cache; every file is checked against its recorded SHA-256, and a missing or different
file is an error naming it. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ENV_DIR = "HELIXGATE_GA4GH_SPECS"
ENV_BASE_URL = "HELIXGATE_GA4GH_SPECS_BASE_URL"
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
MAX_BYTES = 8 * 1024 * 1024  # the largest document is ~150 KiB


@dataclass(frozen=True)
class PinnedSpec:
    """One official document: ``path`` under the specs directory, its upstream location
    (``repo`` at ``commit``, file ``upstream_path``) and its SHA-256."""

    path: str
    repo: str
    commit: str
    upstream_path: str
    sha256: str
    what: str

    def url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.commit}/{self.upstream_path}"


# The bundled (single-file, every $ref resolved) forms published by each repository's docs build
# on its gh-pages branch, at the commits built from the released tags. See docs/compatibility.md.
SPECS: tuple[PinnedSpec, ...] = (
    PinnedSpec(
        "wes/workflow_execution_service.bundled.openapi.yaml",
        "ga4gh/workflow-execution-service-schemas",
        "c7ac5f9357928e52d127a4c699b929cc575953f1",
        "openapi.yaml",
        "79f01929295442ae38864706e127b38a0645cf63e164c1ed5404bb07526ba00f",
        "WES 1.1.0 (gh-pages, deployed from tag 1.1.0 = 226f43b)",
    ),
    PinnedSpec(
        "trs/openapi.bundled.yaml",
        "ga4gh/tool-registry-service-schemas",
        "101c3391dfcd5921be5a42949398764582b99f37",
        "preview/release-2.0.1/openapi.yaml",
        "5d9a700fb222e146c6881abf44e67d5fdedf4deff1ea42a0da46913f0d128c5a",
        "TRS 2.0.1 (gh-pages, built from tag 2.0.1 = a07e7bd)",
    ),
    PinnedSpec(
        "drs/data_repository_service.bundled.openapi.yaml",
        "ga4gh/data-repository-service-schemas",
        "1b6a821ffde89a9c278d654f2bf82316f6e566c5",
        "preview/release/drs-1.5.0/openapi.yaml",
        "eed6d83cb37b466efd46e3127767c4fca1898507e8a6cdf47c743f0f382ef96d",
        "DRS 1.5.0 (gh-pages, matches tag drs-1.5.0 = fe25c39)",
    ),
    PinnedSpec(
        "service-info/service-info.yaml",
        "ga4gh-discovery/ga4gh-service-info",
        "daa4014a27545376415882a1ef17cf9fc4ae6a05",
        "service-info.yaml",
        "743c549d599d36197a06d18493f62d3c3cf6f7a242c5ebec9e341f95b10dad3b",
        "GA4GH service-info 1.0.0 (tag v1.0.0)",
    ),
)


class SpecError(Exception):
    """A pinned document is missing, different from its recorded SHA-256, or cannot be downloaded."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "helixgate" / "ga4gh-specs"


def specs_dir() -> Path:
    """``HELIXGATE_GA4GH_SPECS`` when set, else the cache directory (not checked)."""
    return Path(os.environ.get(ENV_DIR) or default_cache_dir()).expanduser()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(directory: Path) -> None:
    """Raise SpecError naming every pinned file that is missing or differs from its SHA-256."""
    problems = []
    for spec in SPECS:
        path = directory / spec.path
        if not path.is_file():
            problems.append(f"missing: {path} ({spec.what}, from {spec.url()})")
        else:
            actual = _sha256(path)
            if actual != spec.sha256:
                problems.append(f"sha256 mismatch: {path}: expected {spec.sha256}, got {actual}")
    if problems:
        source = f"{ENV_DIR}={directory}" if os.environ.get(ENV_DIR) else f"the cache {directory}"
        raise SpecError(
            f"official GA4GH documents in {source} are not the pinned ones:\n  "
            + "\n  ".join(problems)
            + "\nrun `python scripts/fetch_ga4gh_specs.py` (needs the network) or set "
            f"{ENV_DIR} to a directory holding them"
        )


_resolved: dict[Path, Path] = {}


def resolve() -> Path:
    """The verified directory of the official documents (checked once per process and directory)."""
    directory = specs_dir()
    if directory not in _resolved:
        verify(directory)
        _resolved[directory] = directory
    return directory


def _download(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (pinned https or a chosen mirror)
            data: bytes = resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise SpecError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpecError(
            f"cannot download {url}: {reason} (the network is needed to fetch the pinned GA4GH documents; "
            f"offline, set {ENV_DIR} to a directory holding them)"
        ) from None
    if len(data) > MAX_BYTES:
        raise SpecError(f"cannot download {url}: larger than {MAX_BYTES} bytes")
    return data


def fetch(
    dest: Path, base_url: str = DEFAULT_BASE_URL, *, timeout: float = 60, log: Callable[[str], None] | None = None
) -> list[str]:
    """Make ``dest`` hold every pinned document; return the paths downloaded (cache hits are not).

    A download whose SHA-256 differs from the recorded one is not stored (SpecError names it)."""
    say = log or (lambda _msg: None)
    downloaded = []
    for spec in SPECS:
        target = dest / spec.path
        if target.is_file() and _sha256(target) == spec.sha256:
            say(f"cached: {spec.path}")
            continue
        url = spec.url(base_url)
        say(f"fetching {spec.path} from {url}")
        data = _download(url, timeout)
        actual = hashlib.sha256(data).hexdigest()
        if actual != spec.sha256:
            raise SpecError(
                f"{spec.path}: {url} has sha256 {actual}, expected {spec.sha256} (pinned {spec.what}); not stored"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        downloaded.append(spec.path)
    verify(dest)
    return downloaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, help=f"directory to fill (default: {default_cache_dir()})")
    parser.add_argument(
        "--base-url",
        default=os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL,
        help=f"upstream base URL (or {ENV_BASE_URL}; default {DEFAULT_BASE_URL})",
    )
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    dest = (args.dest or default_cache_dir()).expanduser().resolve()
    try:
        fetch(dest, args.base_url, timeout=args.timeout, log=lambda m: print(m, file=sys.stderr))
    except SpecError as exc:
        print(f"fetch_ga4gh_specs: error: {exc}", file=sys.stderr)
        return 1
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
