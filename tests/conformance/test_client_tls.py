"""ga4gh-drs-client speaks https only: it resolves and downloads an object from a HelixGate
serving TLS, verifying our certificate (no --suppress-ssl-verify) and the sha-256 checksum."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from helixgate.sdk import HelixGate
from tests.conformance.test_clients import client_env
from tests.fixtures.tls import make_pki

pytestmark = pytest.mark.integration


def test_ga4gh_drs_client_downloads_and_validates_over_tls(
    live_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    ca, cert, key = make_pki(tmp_path / "pki", "drs-client")
    server = live_server_factory(
        extra_env={
            "HELIXGATE_TLS_CERT": str(cert),
            "HELIXGATE_TLS_KEY": str(key),
            "HELIXGATE_TLS_CA_BUNDLE": str(ca),
            "HELIXGATE_CA_BUNDLE": str(ca),
        }
    )
    data = b"ACGT" * 4096
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"), verify=str(ca))
    reader_token = server.user("rita", "viewer")
    dataset = steward.create_dataset("reads")
    steward.grant(dataset["id"], "rita")
    obj = steward.upload(data, name="reads.txt", dataset_id=dataset["id"])
    env_dir = client_env("ga4gh-drs-client")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [str(env_dir / "bin" / "drs"), "get", "-d", "-v", "-o", str(out), "-t", reader_token, server.url, obj["id"]],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "REQUESTS_CA_BUNDLE": str(ca), "SSL_CERT_FILE": str(ca)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = list(out.rglob("reads.txt"))
    assert len(files) == 1, (files, proc.stdout, proc.stderr)
    report = (out / "drs_download_report.txt").read_text()
    assert "checksum" in report.lower() or "valid" in report.lower() or obj["id"] in report
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
