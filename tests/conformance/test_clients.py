"""Real GA4GH clients from PyPI, each in its own virtualenv (scripts/clients/install.py),
against the running services. Quirks each client needs are listed in docs/compatibility.md."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conformance.seed import OBJECT_BYTES, UPPER_STEP, WORKFLOW, Seeded

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def client_env(name: str) -> Path:
    """The client's virtualenv, created by the project's script (never by hand)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "clients" / "install.py"), name],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, f"installing {name} failed:\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def host_port(seeded: Seeded) -> tuple[str, int]:
    host, port = seeded.url.split("://", 1)[1].split(":")
    return host, int(port)


def test_wes_client(seeded: Seeded, tmp_path: Path) -> None:
    env = client_env("wes-service")
    (tmp_path / "main.cwl").write_text(WORKFLOW)
    (tmp_path / "upper.cwl").write_text(UPPER_STEP)
    (tmp_path / "job.json").write_text(json.dumps({"message": "from wes-client"}))
    host, port = host_port(seeded)
    token = seeded.tokens["analyst"]
    cli = [str(env / "bin" / "wes-client"), f"--host={host}:{port}", "--proto=http", f"--auth=Bearer {token}"]
    # wes-client's own --run sends no Authorization header (quirk): HelixGate refuses it.
    refused = run([*cli, "--run", "--no-wait", f"--attachments=file://{tmp_path}/upper.cwl", "main.cwl", "job.json"],
                  cwd=tmp_path)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr
    # The same request wes-client builds (build_wes_request), sent with the token it was given.
    driver = textwrap.dedent(
        """
        import json, sys, time, requests
        from wes_client.util import WESClient, build_wes_request
        host, token, wf, job, att = sys.argv[1:]
        client = WESClient({"auth": {"Authorization": "Bearer " + token}, "proto": "http", "host": host})
        parts, files = build_wes_request(wf, "file://" + job, ["file://" + att])  # only file:// URLs work
        r = requests.post(f"http://{host}/ga4gh/wes/v1/runs", data=parts, files=files, headers=client.auth)
        run_id = r.json()["run_id"]
        for _ in range(240):
            if client.get_run_status(run_id)["state"] not in ("QUEUED", "INITIALIZING", "RUNNING"):
                break
            time.sleep(0.5)
        log = client.get_run_log(run_id)
        stderr = requests.get(log["run_log"]["stderr"], headers=client.auth)
        print(json.dumps({"run_id": run_id, "parts": dict(parts), "log": log, "stderr_status": stderr.status_code}))
        """
    )
    out = run([str(env / "bin" / "python"), "-c", driver, f"{host}:{port}", token, str(tmp_path / "main.cwl"),
               str(tmp_path / "job.json"), str(tmp_path / "upper.cwl")])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["parts"]["workflow_type"] == "CWL" and result["parts"]["workflow_type_version"] == "v1.2"
    assert result["log"]["state"] == "COMPLETE", result["log"]
    assert result["log"]["outputs"] == {"shout": "FROM WES-CLIENT"}
    assert result["stderr_status"] == 200
    # the CLI's read commands do send --auth
    got = run([*cli, f"--get={result['run_id']}"])
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["state"] == "COMPLETE"
    status = run([*cli, f"--log={result['run_id']}"])
    assert status.returncode == 0, status.stderr
    listed = run([*cli, "--list"])
    assert listed.returncode == 0 and result["run_id"] in listed.stdout
    info = run([*cli, "--info"])
    assert info.returncode == 0 and "workflow_type_versions" in info.stdout


HELLO_WDL = """version 1.1
workflow hello {
  input { String who }
  output { String greeting = "hello " + who }
}
"""


def test_wes_client_wdl(seeded: Seeded, tmp_path: Path) -> None:
    """wes-client reads a WDL file's version from its *path* string, not its content, so it always
    claims draft-2 (quirk): HelixGate refuses that with a 400 naming the version; the same
    request with the document's version runs."""
    env = client_env("wes-service")
    (tmp_path / "hello.wdl").write_text(HELLO_WDL)
    (tmp_path / "job.json").write_text(json.dumps({"hello.who": "wes-client"}))
    host, port = host_port(seeded)
    driver = textwrap.dedent(
        """
        import json, sys, time, requests
        from wes_client.util import WESClient, build_wes_request
        host, token, wf, job = sys.argv[1:]
        client = WESClient({"auth": {"Authorization": "Bearer " + token}, "proto": "http", "host": host})
        parts, files = build_wes_request("file://" + wf, "file://" + job)
        claimed = dict(parts)["workflow_type_version"]
        url = f"http://{host}/ga4gh/wes/v1/runs"
        refused = requests.post(url, data=parts, files=files, headers=client.auth)
        # the same request with the document's version (files rebuilt: the first POST read them)
        parts = [(k, "1.1" if k == "workflow_type_version" else v) for k, v in parts]
        files = build_wes_request("file://" + wf, "file://" + job)[1]
        r = requests.post(url, data=parts, files=files, headers=client.auth)
        run_id = r.json()["run_id"]
        for _ in range(240):
            if client.get_run_status(run_id)["state"] not in ("QUEUED", "INITIALIZING", "RUNNING"):
                break
            time.sleep(0.5)
        print(json.dumps({"parts": dict(parts), "claimed": claimed, "refused": [refused.status_code, refused.json()],
                          "log": client.get_run_log(run_id)}))
        """
    )
    out = run([str(env / "bin" / "python"), "-c", driver, f"{host}:{port}", seeded.tokens["analyst"],
               str(tmp_path / "hello.wdl"), str(tmp_path / "job.json")])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["claimed"] == "draft-2" and result["parts"]["workflow_type"] == "WDL"
    status, body = result["refused"]
    assert status == 400 and body["status_code"] == 400
    assert "unsupported workflow_type_version 'draft-2' for WDL; supported: 1.0, 1.1" in body["msg"]
    assert result["log"]["state"] == "COMPLETE", result["log"]
    assert result["log"]["outputs"] == {"hello.greeting": "hello wes-client"}
    assert result["log"]["request"]["workflow_engine"] == "miniwdl"


def test_trs_cli(seeded: Seeded, tmp_path: Path) -> None:
    env = client_env("trs-cli")
    host, port = host_port(seeded)
    driver = textwrap.dedent(
        """
        import json, sys
        import pydantic, trs_cli.models
        from trs_cli import TRSClient
        # trs-cli 0.7.0's models are TRS 2.0.0 with extra=forbid: they refuse the 2.0.1 fields
        # (descriptor_type_version, FileWrapper.image_type, ToolFile.checksum). Shim: ignore extras.
        for model in vars(trs_cli.models).values():
            if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
                model.__config__.extra = pydantic.Extra.ignore
        host, port, token, tool, version, out = sys.argv[1:]
        c = TRSClient(uri=f"http://{host}", port=int(port), use_http=True, token=token)
        result = {
            "tool": c.get_tool(id=tool).id,
            "versions": [v.id for v in c.get_versions(id=tool)],
            "version": c.get_version(id=tool, version_id=version).id,
            "descriptor": c.get_descriptor(type="CWL", id=tool, version_id=version).content,
            "by_path": c.get_descriptor_by_path(type="CWL", id=tool, version_id=version, path="echo.cwl").content,
            "files": sorted(f.path for f in c.get_files(type="CWL", id=tool, version_id=version)),
            "tests": [t.content for t in c.get_tests(type="CWL", id=tool, version_id=version)],
            "tools": [t.id for t in c.get_tools()],
            "classes": [k.name for k in c.get_tool_classes()],
        }
        print(json.dumps(result))
        """
    )
    out = run([str(env / "bin" / "python"), "-c", driver, host, str(port), seeded.tokens["viewer"], seeded.tool_id,
               seeded.version_id, str(tmp_path)])
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["tool"] == seeded.tool_id and r["version"] == seeded.version_id
    assert seeded.version_id in r["versions"] and seeded.tool_id in r["tools"]
    assert "class: CommandLineTool" in r["descriptor"] and r["descriptor"] == r["by_path"]
    assert r["files"] == ["echo.cwl", "tests/echo.json"]
    assert json.loads(r["tests"][0]) == {"message": "hello"}
    assert "CommandLineTool" in r["classes"]


def test_drs_cli(seeded: Seeded) -> None:
    env = client_env("drs-cli")
    host, port = host_port(seeded)
    driver = textwrap.dedent(
        """
        import json, sys, requests
        from drs_cli.client import DRSClient
        host, port, token, oid = sys.argv[1:]
        c = DRSClient(uri=f"http://{host}", port=int(port), use_http=True, token=token)
        obj = c.get_object(object_id=oid)
        access = c.get_access_url(object_id=oid, access_id=obj.access_methods[0].access_id)
        headers = dict(h.split(": ", 1) for h in (access.headers or []))
        data = requests.get(access.url, headers=headers).content
        print(json.dumps({"id": obj.id, "size": obj.size, "checksums": [[c.type, c.checksum] for c in obj.checksums],
                          "data_sha256": __import__("hashlib").sha256(data).hexdigest()}))
        """
    )
    out = run([str(env / "bin" / "python"), "-c", driver, host, str(port), seeded.tokens["steward"], seeded.object_id])
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["id"] == seeded.object_id and r["size"] == len(OBJECT_BYTES)
    assert ["sha-256", seeded.object_sha256] in r["checksums"]
    assert r["data_sha256"] == seeded.object_sha256 == hashlib.sha256(OBJECT_BYTES).hexdigest()


def test_cwltool_resolves_a_tool_from_trs(seeded: Seeded) -> None:
    # cwltool's TRS resolver uses the pre-2.0 /api/ga4gh/v2/... plain-CWL paths (HelixGate alias)
    cwltool = str(Path(sys.executable).parent / "cwltool")
    out = run([cwltool, "--enable-ga4gh-tool-registry", "--add-ga4gh-tool-registry", f"{seeded.url}/ga4gh/trs/v2",
               "--validate", f"{seeded.tool_id}:{seeded.version_id}"])
    assert out.returncode == 0, out.stderr[-3000:]
    output = out.stdout + out.stderr
    assert f"/api/ga4gh/v2/tools/{seeded.tool_id}/versions/{seeded.version_id}/plain-CWL/descriptor" in output
    assert "is valid CWL" in output
