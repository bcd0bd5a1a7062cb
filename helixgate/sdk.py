"""A typed client for the HelixGate APIs, shared by the CLI, the demo and the tests:
publish a tool version, upload and grant data, submit and follow runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping
from urllib.parse import quote

from helixgate.client import ApiClient
from helixgate.errors import HelixGateError

WES = "/ga4gh/wes/v1"
TRS = "/ga4gh/trs/v2"
DRS = "/ga4gh/drs/v1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


@dataclass
class HelixGate:
    api: ApiClient

    @classmethod
    def connect(cls, url: str, token: str | None, *, verify: bool | str = True) -> HelixGate:
        return cls(ApiClient(url, token, verify=verify))

    # ------------------------------------------------------------------ TRS
    def create_tool(
        self, organization: str, name: str, *, tool_id: str | None = None, description: str = ""
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"organization": organization, "name": name, "description": description}
        if tool_id:
            body["id"] = tool_id
        return self.api.post_json(f"{TRS}/x-helixgate/tools", body)

    def publish_version(
        self,
        tool_id: str,
        version_id: str,
        files: Mapping[str, str],
        images: list[str],
        *,
        primary: str,
        descriptor_type: str = "CWL",
    ) -> dict[str, Any]:
        entries = [
            {
                "path": path,
                "content": content,
                "file_type": "PRIMARY_DESCRIPTOR" if path == primary else "SECONDARY_DESCRIPTOR",
            }
            for path, content in files.items()
        ]
        body = {"id": version_id, "files": entries, "images": images, "descriptor_type": descriptor_type}
        return self.api.post_json(f"{TRS}/x-helixgate/tools/{quote(tool_id, safe='')}/versions", body)

    def version_record(self, tool_id: str, version_id: str, *, content: bool = False) -> dict[str, Any]:
        t, v = quote(tool_id, safe=""), quote(version_id, safe="")
        params = {"include_content": "true"} if content else None
        return self.api.get_json(f"{TRS}/x-helixgate/tools/{t}/versions/{v}", params=params)

    def trust_material(self) -> dict[str, Any]:
        return self.api.get_json(f"{TRS}/x-helixgate/signing/trust")

    # ------------------------------------------------------------------ DRS
    def create_dataset(self, name: str, *, public: bool = False) -> dict[str, Any]:
        return self.api.post_json(f"{DRS}/x-helixgate/datasets", {"name": name, "public": public})

    def grant(self, dataset_id: str, username: str) -> dict[str, Any]:
        return self.api.post_json(
            f"{DRS}/x-helixgate/datasets/{quote(dataset_id, safe='')}/grants", {"username": username}
        )

    def upload(
        self,
        data: bytes | BinaryIO | Iterator[bytes],
        *,
        name: str,
        dataset_id: str | None = None,
        sha256: str | None = None,
        mime_type: str | None = None,
    ) -> dict[str, Any]:
        params = {
            k: v
            for k, v in {"name": name, "dataset_id": dataset_id, "sha256": sha256, "mime_type": mime_type}.items()
            if v
        }
        resp = self.api.request(
            "POST",
            f"{DRS}/x-helixgate/objects",
            params=params,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return resp.json()

    def upload_file(
        self,
        path: Path,
        *,
        name: str | None = None,
        dataset_id: str | None = None,
        sha256: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while block := fh.read(1024 * 1024):
                    if progress:
                        progress(len(block))
                    yield block

        return self.upload(chunks(), name=name or path.name, dataset_id=dataset_id, sha256=sha256)

    def get_object(self, object_id: str) -> dict[str, Any]:
        return self.api.get_json(f"{DRS}/objects/{quote(object_id, safe='')}")

    def download(self, object_id: str) -> Iterator[bytes]:
        """The object's bytes through a short-lived signed URL (the server re-hashes while streaming)."""
        obj = self.get_object(object_id)
        method = next((m for m in obj.get("access_methods") or [] if m.get("type") == "https"), None)
        if method is None:
            raise HelixGateError(f"object {object_id} has no https access method")
        url = self.api.get_json(f"{DRS}/objects/{quote(object_id, safe='')}/access/{method['access_id']}")["url"]
        yield from self.api.stream(url)

    # ------------------------------------------------------------------ WES
    def submit_run(
        self,
        workflow_url: str,
        params: Mapping[str, Any],
        *,
        attachments: Mapping[str, bytes] | None = None,
        workflow_type_version: str = "v1.2",
        tags: Mapping[str, str] | None = None,
    ) -> str:
        form = {
            "workflow_url": workflow_url,
            "workflow_type": "CWL",
            "workflow_type_version": workflow_type_version,
            "workflow_params": json.dumps(dict(params)),
            "tags": json.dumps(dict(tags or {})),
        }
        # always multipart/form-data (the WES contract), even without attachments
        parts: list[tuple[str, tuple[str | None, Any]]] = [(k, (None, v)) for k, v in form.items()]
        parts += [("workflow_attachment", (name, content)) for name, content in (attachments or {}).items()]
        resp = self.api.request("POST", f"{WES}/runs", files=parts)
        return str(resp.json()["run_id"])

    def run_status(self, run_id: str) -> str:
        return str(self.api.get_json(f"{WES}/runs/{run_id}/status")["state"])

    def run_log(self, run_id: str) -> dict[str, Any]:
        return self.api.get_json(f"{WES}/runs/{run_id}")

    def run_tasks(self, run_id: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.api.get_json(
                f"{WES}/runs/{run_id}/tasks", params={"page_size": 100, **({"page_token": token} if token else {})}
            )
            tasks.extend(page.get("task_logs") or [])
            token = page.get("next_page_token") or ""
            if not token:
                return tasks

    def cancel_run(self, run_id: str) -> None:
        self.api.request("POST", f"{WES}/runs/{run_id}/cancel")

    def wait(self, run_id: str, *, timeout: float = 600, poll: float = 0.5) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_status(run_id)
            if state in TERMINAL:
                return state
            if time.monotonic() > deadline:
                raise HelixGateError(f"run {run_id} still {state} after {timeout:.0f}s")
            time.sleep(poll)
