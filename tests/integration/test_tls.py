"""Encryption in transit: the services serve TLS 1.2+ only, and WES verifies DRS's
certificate against the configured CA bundle when it calls DRS on a user's behalf."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from helixgate.sdk import HelixGate
from tests.fixtures.live import free_port
from tests.fixtures.tls import make_pki as _cert

pytestmark = pytest.mark.integration


@pytest.fixture()
def tls_server(live_server_factory: Callable[..., Any], tmp_path: Path) -> Any:
    ca, cert, key = _cert(tmp_path / "pki", "helixgate")
    env = {
        "HELIXGATE_TLS_CERT": str(cert),
        "HELIXGATE_TLS_KEY": str(key),
        "HELIXGATE_TLS_CA_BUNDLE": str(ca),
        "HELIXGATE_CA_BUNDLE": str(ca),  # for the CLI
    }
    return live_server_factory(extra_env=env)


def _handshake(port: int, ca: str, *, maximum: ssl.TLSVersion) -> str:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = maximum
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return str(tls.version())


def test_only_tls_12_and_newer_are_accepted(tls_server: Any) -> None:
    ca = str(tls_server.verify)
    assert _handshake(tls_server.port, ca, maximum=ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert _handshake(tls_server.port, ca, maximum=ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        _handshake(tls_server.port, ca, maximum=ssl.TLSVersion.TLSv1_1)
    # clients verify the certificate: without the CA it is refused
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_server.url}/ga4gh/drs/v1/service-info", timeout=5)


def test_wes_calls_drs_over_verified_tls(tls_server: Any) -> None:
    steward = HelixGate.connect(tls_server.url, tls_server.user("steward", "data-steward"), verify=tls_server.verify)
    ann_token = tls_server.user("ann", "analyst")
    dataset = steward.create_dataset("d")
    steward.grant(dataset["id"], "ann")
    obj = steward.upload(b"x\n", name="x.txt", dataset_id=dataset["id"])
    assert steward.get_object(obj["id"])["self_uri"] == f"drs://127.0.0.1:{tls_server.port}/{obj['id']}"
    analyst = HelixGate.connect(tls_server.url, ann_token, verify=tls_server.verify)
    wf = (
        b"cwlVersion: v1.2\nclass: ExpressionTool\nrequirements: {InlineJavascriptRequirement: {}}\n"
        b"inputs: {f: File}\noutputs: {}\nexpression: '${return {};}'\n"
    )
    # submission makes WES check ann's read access at DRS over https (service identity + CA bundle)
    run_id = analyst.submit_run(
        "wf.cwl",
        {"f": {"class": "File", "location": f"drs://127.0.0.1:{tls_server.port}/{obj['id']}"}},
        attachments={"wf.cwl": wf},
    )
    assert analyst.run_status(run_id) in {"QUEUED", "INITIALIZING", "RUNNING", "COMPLETE"}
    # the CLI verifies the certificate too
    r = tls_server.cli("run", "status", run_id, token=ann_token)
    assert r.returncode == 0, r.stderr


def test_wes_refuses_a_drs_certificate_it_cannot_verify(
    live_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    ca, cert, key = _cert(tmp_path / "pki", "real")
    other_ca, _, _ = _cert(tmp_path / "other", "other")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = {
        "HELIXGATE_TLS_CERT": str(cert),
        "HELIXGATE_TLS_KEY": str(key),
        "HELIXGATE_TLS_CA_BUNDLE": str(other_ca),  # WES trusts a CA that did not sign DRS's certificate
        "HELIXGATE_CA_BUNDLE": str(ca),
        "HELIXGATE_BUILTIN_ISSUER_URL": f"{url}/oidc",
        "HELIXGATE_DRS_URL": url,
        "HELIXGATE_TRS_URL": url,
    }
    # the APIs without workers, and a worker process of its own: DRS is not served where the
    # worker runs, so it reads inputs over https (in `serve all` it would call DRS in-process)
    server = live_server_factory(extra_env=env, port=port, workers=0)
    live_server_factory(extra_env=env, data_dir=server.data_dir, service="worker")
    server.verify = str(ca)
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"), verify=str(ca))
    analyst = HelixGate.connect(server.url, server.user("ann", "analyst"), verify=str(ca))
    dataset = steward.create_dataset("d")
    steward.grant(dataset["id"], "ann")
    obj = steward.upload(b"x\n", name="x.txt", dataset_id=dataset["id"])
    wf = (
        b"cwlVersion: v1.2\nclass: ExpressionTool\nrequirements: {InlineJavascriptRequirement: {}}\n"
        b"inputs: {f: File}\noutputs: {}\nexpression: '${return {};}'\n"
    )
    # the worker reaches the core (its token, with its service credential) and DRS over https:
    # their certificate does not verify against the CA bundle WES was given, so the run fails
    # before any task and nothing is read
    run_id = analyst.submit_run(
        "wf.cwl", {"f": {"class": "File", "location": obj["self_uri"]}}, attachments={"wf.cwl": wf}
    )
    assert analyst.wait(run_id, timeout=120) == "SYSTEM_ERROR"
    logs = "\n".join(analyst.run_log(run_id)["run_log"]["system_logs"])
    assert "SSLError" in logs and ("cannot reach" in logs or "unreachable" in logs), logs
    assert analyst.run_tasks(run_id) == []
