"""WES 1.1.0 JSON shapes built from the domain's read models (run and task rows, run pages)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from helixgate.service_info import ServiceType, base_service_info
from wes_server.domain import RunPage, ServiceFacts
from wes_server.models import RunRow, TaskRow
from wes_server.runs import iso
from wes_server.submission import WORKFLOW_TYPES

WES_TYPE = ServiceType("wes", "org.ga4gh", "wes", "1.1.0", "HelixGate workflow execution service")


def service_info(settings: Any, facts: ServiceFacts) -> dict[str, Any]:
    info = base_service_info(WES_TYPE, settings.effective_public_url, settings.drs_host)
    info.update(
        {
            "workflow_type_versions": {t: {"workflow_type_version": list(v)} for t, v in WORKFLOW_TYPES.items()},
            "supported_wes_versions": ["1.1.0"],
            "supported_filesystem_protocols": ["drs"],
            "workflow_engine_versions": {
                engine: {"workflow_engine_version": [version]} for engine, version in facts.engine_versions.items()
            },
            "default_workflow_engine_parameters": [],
            "system_state_counts": dict(facts.state_counts),
            "auth_instructions_url": f"{settings.effective_public_url}/docs#tokens",
            "tags": {
                "verification": "image signature, image digest and input checksums before every task",
                "queue": facts.queue_name,
            },
        }
    )
    return info


def run_list(page: RunPage) -> dict[str, Any]:
    runs = [
        {
            "run_id": r.id,
            "state": r.state,
            "start_time": iso(r.start_time) or "",
            "end_time": iso(r.end_time) or "",
            "tags": page.tags[r.id],
        }
        for r in page.rows
    ]
    return {"runs": runs, "next_page_token": page.next_page_token}


def run_log(row: RunRow, base_url: str) -> dict[str, Any]:
    main = row.workflow_source.get("main", "")
    return {
        "run_id": row.id,
        "request": row.request,
        "state": row.state,
        "run_log": _known(
            {
                "name": main,
                "cmd": ["helixgate-executor", main] if main else [],
                "start_time": iso(row.start_time),
                "end_time": iso(row.end_time),
                "stdout": f"{base_url}/x-helixgate/runs/{row.id}/log/stdout",
                "stderr": f"{base_url}/x-helixgate/runs/{row.id}/log/stderr",
                "exit_code": row.exit_code,
                "system_logs": list(row.system_logs or []),
            }
        ),
        "task_logs_url": f"{base_url}/runs/{row.id}/tasks",
        "outputs": row.outputs or {},
    }


def run_status(row: RunRow) -> dict[str, Any]:
    return {"run_id": row.id, "state": row.state}


def run_id(run_id: str) -> dict[str, Any]:
    return {"run_id": run_id}


def task_log(row: TaskRow, base_url: str) -> dict[str, Any]:
    return _known(
        {
            "id": row.id,
            "name": row.name,
            "cmd": list(row.cmd or []),
            "start_time": iso(row.start_time),
            "end_time": iso(row.end_time),
            "stdout": f"{base_url}/x-helixgate/runs/{row.run_id}/tasks/{row.id}/stdout",
            "stderr": f"{base_url}/x-helixgate/runs/{row.run_id}/tasks/{row.id}/stderr",
            "exit_code": row.exit_code,
            "system_logs": list(row.system_logs or []),
        }
    )


def task_list(rows: Sequence[TaskRow], next_page_token: str, base_url: str) -> dict[str, Any]:
    return {"task_logs": [task_log(r, base_url) for r in rows], "next_page_token": next_page_token}


def task_evidence(row: TaskRow) -> dict[str, Any]:
    """What the gate checked for one task: the image (and, once verified, what its signature
    proved), each staged input's expected vs actual SHA-256, the outputs it hashed, and the
    refusal when there was one."""
    verification = row.verification or {}
    proved = verification.get("image") or {}
    image: dict[str, Any] = {"reference": row.image or "", "verified": bool(proved)}
    for key in ("image_id", "pinned_ref", "signer", "tool_id", "version_id"):
        if proved.get(key):
            image[key] = str(proved[key])
    if "image_id" not in image and row.image_id:
        image["image_id"] = row.image_id
    inputs = [
        _known(
            {
                "path": str(i.get("path", "")),
                "source": str(i.get("source", "")),
                "expected": i.get("expected") or None,  # tasks run before the field existed lack it
                "actual": str(i.get("sha256", "")),
            }
        )
        for i in row.inputs or []
        if isinstance(i, dict)
    ]
    outputs = [
        _known({"path": str(o.get("path", "")), "sha256": str(o.get("sha256", "")), "size": o.get("size")})
        for o in row.outputs or []
        if isinstance(o, dict)
    ]
    out = _known(
        {
            "task_id": row.id,
            "name": row.name,
            "state": row.state,
            "start_time": iso(row.start_time),
            "end_time": iso(row.end_time),
            "exit_code": row.exit_code,
            "image": image,
            "inputs": inputs,
            "outputs": outputs,
        }
    )
    refusal = verification.get("refusal")
    if isinstance(refusal, dict) and refusal.get("message"):
        out["refusal"] = {k: str(v) for k, v in refusal.items() if k in ("message", "subject", "expected", "actual")}
    return out


def run_evidence(run_id: str, rows: Sequence[TaskRow]) -> dict[str, Any]:
    return {"run_id": run_id, "tasks": [task_evidence(r) for r in rows]}


def _known(log: dict[str, Any]) -> dict[str, Any]:
    """WES Log fields are optional but never null: a time or exit code not known yet is left out."""
    return {k: v for k, v in log.items() if v is not None}
