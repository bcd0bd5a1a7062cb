"""Command groups for tool developers (``tool``), data stewards (``data``) and workflow users (``run``).

Every command talks to the services over HTTP through ``helixgate.sdk.HelixGate``; handlers
only parse arguments, call the SDK and shape the output (human text, or JSON with ``--json``).
Errors are ``HelixGateError``s: ``helixgate_app.cli.main`` prints them as one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from helixgate.cwl_documents import document_references
from helixgate.errors import BadRequest, Forbidden, HelixGateError, IntegrityError
from helixgate.integrity import check_sha256, normalize_sha256
from helixgate.sdk import HelixGate, check_recorded_checksums, output_files, sha256_of, sha256_path
from helixgate.uris import has_scheme
from helixgate.wdl_documents import load_wdl, replace_files, wdl_imports
from helixgate_app.cli_common import api, emit, table

_TEXT_LIMIT = 16 * 1024 * 1024


def _hg(args: argparse.Namespace) -> HelixGate:
    return HelixGate(api(args))


class Progress:
    """A one-line progress meter on stderr, redrawn at most ten times a second (no-op when disabled)."""

    def __init__(self, enabled: bool, label: str, total: int | None = None) -> None:
        self.enabled, self.label, self.total = enabled, label, total
        self.done_bytes = 0
        self._last = 0.0

    def reset(self, label: str) -> None:
        self.label, self.done_bytes = label, 0

    def __call__(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done_bytes == self.total):
            self._last = now
            pct = f" {min(100, 100 * self.done_bytes // self.total):3d}%" if self.total else ""  # retries re-send
            sys.stderr.write(f"\r{self.label}:{pct} {_size(self.done_bytes)}" + " " * 8)
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.done_bytes:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _progress(args: argparse.Namespace, label: str, total: int | None = None) -> Progress:
    return Progress(bool(getattr(args, "progress", False)) or sys.stderr.isatty(), label, total)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _inputs_document(path: str) -> tuple[dict[str, Any], Path]:
    """The JSON object of ``--inputs-json`` and the folder its relative file paths start from."""
    try:
        loaded = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(loaded, dict):
        raise BadRequest(f"{path} must hold a JSON object of inputs")
    return loaded, Path(path).resolve().parent


def _split_kv(item: str, option: str, form: str = "KEY=VALUE") -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise BadRequest(f"{option} expects {form}, got {item[:80]!r}")
    return key, value


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if len(data) > _TEXT_LIMIT:
        raise BadRequest(f"{path}: {len(data)} bytes is too large for a descriptor")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{path} is not UTF-8 text") from None


def _object_lines(obj: dict[str, Any]) -> list[str]:
    lines = [
        f"{obj.get('self_uri') or obj['id']}",
        f"  name     {obj.get('name', '-')}",
        f"  size     {obj.get('size')} bytes",
        f"  sha256   {sha256_of(obj)}",
        f"  created  {obj.get('created_time', '-')}",
    ]
    if obj.get("provenance"):
        prov = obj["provenance"]
        lines.append(
            f"  produced by run {prov.get('run_id')} task {prov.get('task_id')} image {prov.get('image_digest')}"
        )
    if obj.get("x-helixgate-quarantined"):
        lines.append("  QUARANTINED: failed an integrity check; it cannot be read")
    return lines


# =========================================================================== tool developers
def _version_text(rec: dict[str, Any]) -> str:
    sig = rec.get("signature") or {}
    signer = f"registry key {sig.get('signer')}" if sig.get("signer_kind") == "key" else str(sig.get("signer"))
    lines = [
        f"tool {rec['tool_id']} version {rec['version_id']} ({', '.join(rec.get('descriptor_type') or [])})",
        f"  published by {rec.get('publisher')} at {rec.get('created_at')}",
        f"  signed: yes by {signer} at {sig.get('signed_at')}" if sig.get("signed") else "  signed: NO",
        f"  signed subject: {sig.get('subject_name')} {sig.get('subject_digest')} ({sig.get('digest_kind')} digest)",
        "  images:",
    ]
    for img in rec.get("images") or []:
        lines.append(f"    {'primary ' if img.get('primary') else ''}{img.get('reference')}")
        lines.append(f"      pinned    {img.get('image_name')}")
        lines.append(f"      manifest  {img.get('manifest_digest') or '-'}")
        lines.append(f"      image id  {img.get('config_digest')}")
    lines.append("  files:")
    for f in rec.get("files") or []:
        lines.append(f"    {f['path']}  {f.get('file_type')}  sha256 {(f.get('checksum') or {}).get('checksum')}")
    return "\n".join(lines)


def cmd_tool_create(args: argparse.Namespace) -> int:
    tool = _hg(args).create_tool(args.organization, args.name, tool_id=args.id, description=args.description or "")
    emit(args, tool, lambda t: f"created tool {t['id']} ({t.get('organization')} / {t.get('name')})")
    return 0


def _descriptor_files(primary: Path, extra: list[str]) -> dict[str, str]:
    """Descriptor contents by path relative to the primary descriptor's directory."""
    root = primary.resolve().parent
    files = {primary.name: _read_text(primary)}
    for item in extra:
        path = Path(item).resolve()
        if not path.is_relative_to(root):
            raise BadRequest(
                f"--file {item} is outside {root}: descriptor paths are relative to the primary descriptor's directory"
            )
        files[path.relative_to(root).as_posix()] = _read_text(path)
    return files


def language_of(path: str, given: str | None) -> str:
    """CWL or WDL: as given, else WDL for a ``.wdl`` file and CWL otherwise."""
    if given:
        return given.upper()
    return "WDL" if path.lower().endswith(".wdl") else "CWL"


def cmd_tool_publish(args: argparse.Namespace) -> int:
    primary = Path(args.descriptor)
    language = language_of(primary.name, args.descriptor_type)
    files = _descriptor_files(primary, args.file or [])
    if language == "WDL":
        # the imports travel with the primary; the same restricted loader as the registry's
        # refuses a bad document here, before anything is sent, stored or signed
        for name, content in workflow_attachments(primary, "WDL").items():
            files.setdefault(name, content.decode("utf-8"))
        load_wdl({name: text.encode("utf-8") for name, text in files.items()}, primary.name)
    hg = _hg(args)
    hg.publish_version(
        args.tool_id, args.version, files, list(args.image), primary=primary.name, descriptor_type=language
    )
    record = hg.version_record(args.tool_id, args.version)
    check_recorded_checksums(files, record)  # the registry hashed what it received: it must be what we sent
    emit(args, record, _version_text)
    return 0


def cmd_tool_show(args: argparse.Namespace) -> int:
    hg = _hg(args)
    if args.version:
        emit(args, hg.version_record(args.tool_id, args.version), _version_text)
        return 0

    def human(t: dict[str, Any]) -> str:
        meta = t.get("x_helixgate") or {}
        head = [
            f"tool {t['id']} ({t.get('organization')} / {t.get('name')}), owner {meta.get('owner', '-')}",
            f"  {t.get('description') or ''}".rstrip(),
        ]
        rows = [
            (v.get("id"), "yes" if v.get("signed") else "no", ",".join(v.get("descriptor_type") or []))
            for v in t.get("versions") or []
        ]
        return "\n".join([h for h in head if h.strip()] + [table(rows, ("VERSION", "SIGNED", "TYPE"))])

    emit(args, hg.get_tool(args.tool_id), human)
    return 0


def cmd_tool_verify(args: argparse.Namespace) -> int:
    material = json.loads(Path(args.trust_material).read_text()) if args.trust_material else None
    try:
        result = _hg(args).verify_version(args.tool_id, args.version, trust_material=material)
    except IntegrityError as exc:
        raise IntegrityError(
            f"verification of {args.tool_id} {args.version} FAILED: {exc.message}",
            subject=exc.subject,
            expected=exc.expected,
            actual=exc.actual,
        ) from None
    data = {
        "verified": True,
        "trust": "file " + args.trust_material if args.trust_material else "registry",
        **asdict(result),
    }

    def human(d: dict[str, Any]) -> str:
        lines = [
            f"verified {d['tool_id']} {d['version_id']} locally (trust material from the {d['trust']})",
            f"  signer   {d['signer']}",
            f"  subject  {d['subject_name']} {d['subject_digest']}",
        ]
        lines += [f"  file     {path}  sha256 {digest}  ok" for path, digest in d["files"].items()]
        return "\n".join(lines)

    emit(args, data, human)
    return 0


def cmd_tool_trust(args: argparse.Namespace) -> int:
    material = _hg(args).trust_material()
    if args.output:
        Path(args.output).write_text(json.dumps(material, indent=2, sort_keys=True) + "\n")
        print(f"trust material ({material.get('kind')}) written to {args.output}", file=sys.stderr)
    else:
        print(json.dumps(material, indent=2, sort_keys=True))
    return 0


# =========================================================================== data stewards
def cmd_data_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    total = path.stat().st_size
    progress = _progress(args, f"hashing {path.name}", total)
    local = sha256_path(path, progress)
    progress.finish()
    if args.sha256:
        check_sha256(f"local file {path} (against --sha256)", normalize_sha256(args.sha256), local)
    progress.reset(f"uploading {path.name}")
    try:
        result = _hg(args).upload_file_idempotent(
            path, name=args.name, dataset_id=args.dataset, sha256=local, retries=args.retries, progress=progress
        )
    finally:
        progress.finish()
    data = {"object": result.object, "reused": result.reused, "attempts": result.attempts}

    def human(d: dict[str, Any]) -> str:
        verb = "reused (an earlier attempt had stored it)" if d["reused"] else "uploaded"
        return "\n".join([f"{verb}: {path}"] + _object_lines(d["object"]))

    emit(args, data, human)
    return 0


def cmd_data_register(args: argparse.Namespace) -> int:
    if not args.s3_url.startswith("s3://"):
        raise BadRequest(f"only s3://bucket/key can be registered in place, got {args.s3_url[:120]!r}")
    obj = _hg(args).register_object(args.s3_url, name=args.name, dataset_id=args.dataset, sha256=args.sha256)
    emit(args, obj, lambda o: "\n".join([f"registered {args.s3_url}"] + _object_lines(o)))
    return 0


def cmd_data_dataset_create(args: argparse.Namespace) -> int:
    ds = _hg(args).create_dataset(args.name, public=args.public)
    emit(args, ds, lambda d: f"created dataset {d['id']} ({d['name']}{', public' if d.get('public') else ''})")
    return 0


def cmd_data_grant(args: argparse.Namespace) -> int:
    grant = _hg(args).grant(args.dataset, args.user)
    emit(args, grant, lambda g: f"granted {g['username']} read access to dataset {g['dataset_id']}")
    return 0


def cmd_data_revoke(args: argparse.Namespace) -> int:
    _hg(args).revoke(args.dataset, args.user)
    emit(
        args,
        {"dataset_id": args.dataset, "username": args.user, "revoked": True},
        lambda d: f"revoked {d['username']}'s access to dataset {d['dataset_id']}",
    )
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from helixgate.sdk import object_id_of

    emit(args, _hg(args).get_object(object_id_of(args.object)), lambda o: "\n".join(_object_lines(o)))
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    progress = _progress(args, f"downloading {args.object}")
    try:
        got = _hg(args).download_verified(args.object, Path(args.output) if args.output else None, progress=progress)
    finally:
        progress.finish()
    data = {"verified": True, **asdict(got), "path": str(got.path) if got.path else None}
    emit(
        args,
        data,
        lambda d: (
            f"verified {d['uri']}: {d['size']} bytes, sha256 {d['sha256']}"
            + (f", saved to {d['path']}" if d["path"] else "")
        ),
    )
    return 0


# =========================================================================== workflow users
def workflow_attachments(main: Path, language: str = "CWL") -> dict[str, bytes]:
    """The workflow file and every sibling document it references (CWL ``run:``, ``$import``;
    WDL ``import``), by path relative to the workflow's directory."""
    root = main.resolve().parent
    todo, found = [main.resolve()], {}
    while todo:
        path = todo.pop()
        rel = path.relative_to(root).as_posix()
        if rel in found:
            continue
        found[rel] = path.read_bytes()
        if language == "WDL":  # names relative to the workflow's directory, never a URL or '..'
            refs = [(name, root / name) for name in wdl_imports(found[rel], rel)]
        else:
            refs = [(ref, path.parent / ref) for ref in document_references(found[rel], rel) if "://" not in ref]
        for ref, where in refs:
            target = where.resolve()
            if not target.is_relative_to(root):
                raise BadRequest(f"{rel} references {ref}, outside the workflow's directory {root}")
            if not target.is_file():
                raise BadRequest(f"{rel} references {ref}, which does not exist")
            todo.append(target)
    return found


def _cli_input(value: str) -> Any:
    """``drs://`` -> File; an existing or path-looking value -> local File; else a JSON literal or a string."""
    if has_scheme(value, "drs"):
        return {"class": "File", "location": value.strip()}
    if value.startswith(("./", "../", "/", "~")) or Path(value).is_file():
        return {"class": "File", "location": str(Path(value).expanduser().resolve()), "_local": True}
    try:
        return json.loads(value)
    except ValueError:
        return value


def _mark_local_files(value: Any, base: Path) -> Any:
    """In an inputs JSON document: File locations/paths without a URI scheme are local files (relative to it)."""
    if isinstance(value, list):
        return [_mark_local_files(v, base) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _mark_local_files(v, base) for k, v in value.items()}
    if out.get("class") == "File":
        loc = str(out.get("location") or out.get("path") or "")
        if loc.startswith("file://"):
            loc = loc[len("file://") :]
        if loc and "://" not in loc:
            out.pop("path", None)
            out.update(location=str((base / Path(loc).expanduser()).resolve()), _local=True)
    return out


def _upload_local_inputs(hg: HelixGate, params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Upload every local input File to DRS (when the caller may) and point the input at its drs:// URI."""
    me: dict[str, Any] | None = None

    def visit(name: str, value: Any) -> Any:
        nonlocal me
        if isinstance(value, list):
            return [visit(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        if not value.pop("_local", False):
            return {k: visit(f"{name}.{k}", v) for k, v in value.items()}
        path = Path(value["location"])
        if not path.is_file():
            raise BadRequest(f"input {name}: no such file {path}")
        me = me or hg.me()
        if "drs:write" not in (me.get("permissions") or []):
            raise Forbidden(
                f"input {name}: {path} is a local file and {me.get('username')} may not upload data (no drs:write); "
                f"ask a data steward to upload it and grant you read access, then pass --input {name}=drs://<host>/<id>"
            )
        progress = _progress(args, f"uploading input {name}", path.stat().st_size)
        try:
            obj = hg.upload_file_idempotent(path, dataset_id=args.dataset, progress=progress).object
        finally:
            progress.finish()
        print(f"uploaded input {name}: {path} -> {obj['self_uri']}", file=sys.stderr)
        return {**value, "location": obj["self_uri"]}

    return {k: visit(k, v) for k, v in params.items()}


def _finish(args: argparse.Namespace, hg: HelixGate, run_id: str, state: str) -> int:
    log = hg.run_log(run_id) if state == "COMPLETE" or args.json else None
    emit(
        args,
        {"run_id": run_id, "state": state, "outputs": (log or {}).get("outputs")},
        lambda d: f"run {run_id}: {state}",
    )
    if state == "COMPLETE":
        return 0
    system = (log or hg.run_log(run_id)).get("run_log", {}).get("system_logs") or []
    raise HelixGateError(f"run {run_id} finished {state}" + (f": {system[-1]}" if system else ""))


def _wdl_params(args: argparse.Namespace, doc: Any) -> tuple[dict[str, Any], dict[str, Path]]:
    """WDL inputs (Cromwell-style JSON: ``{"wf.reads": "drs://..."}``) and the local files among
    them, found by the workflow's declared File types when the document is local (a TRS
    workflow: any value naming an existing local file), each to be uploaded to DRS."""
    local: dict[str, Path] = {}

    def local_file(base: Path, typed: bool) -> Callable[[str, str], str]:
        def visit(name: str, value: str) -> str:
            if has_scheme(value, "drs"):
                return value.strip()
            path = (base / Path(value).expanduser()).resolve()
            if typed or path.is_file():
                local[value] = path
            return value

        return visit

    def convert(params: dict[str, Any], base: Path) -> dict[str, Any]:
        if doc is not None:
            return replace_files(doc, params, local_file(base, True))
        for key, value in params.items():
            for s in _strings(value):
                local_file(base, False)(key, s)
        return params

    params: dict[str, Any] = {}
    if args.inputs_json:
        params = convert(*_inputs_document(args.inputs_json))
    for item in args.input or []:
        name, raw = _split_kv(item, "--input", "NAME=VALUE")
        value: Any = raw
        if not _is_string_input(doc, name):  # 3, true, [..], {..} are WDL values; a String stays as typed
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        params.update(convert({name: value}, Path.cwd()))
    return params, local


def _is_string_input(doc: Any, name: str) -> bool:
    if doc is None:
        return False
    import WDL

    from helixgate.wdl_documents import target_of

    target = target_of(doc)
    short = name[len(target.name) + 1 :] if name.startswith(target.name + ".") else name
    if short not in target.available_inputs:
        return False
    return isinstance(target.available_inputs[short].type, (WDL.Type.String, WDL.Type.File))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _upload_wdl_files(
    hg: HelixGate, params: dict[str, Any], local: dict[str, Path], doc: Any, args: argparse.Namespace
) -> Any:
    """Upload each local file once (when the caller may) and put its drs:// URI where it was
    named: only in File-typed places when the document is known."""
    uris: dict[str, str] = {}
    for value, path in local.items():
        wrapped = _upload_local_inputs(hg, {value: {"location": str(path), "_local": True}}, args)
        uris[value] = str(wrapped[value]["location"])
    if doc is not None:
        return replace_files(doc, params, lambda _name, v: uris.get(v, v))

    def swap(v: Any) -> Any:
        if isinstance(v, str):
            return uris.get(v, v)
        if isinstance(v, list):
            return [swap(x) for x in v]
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        return v

    return swap(params)


def _submit_wdl(args: argparse.Namespace, tags: dict[str, str]) -> int:
    url = args.workflow
    attachments: dict[str, bytes] | None = None
    doc = None
    if "://" not in url:
        main = Path(url)
        if not main.is_file():
            raise BadRequest(f"workflow {url}: no such file (give a local .wdl file or trs://host/tool/version)")
        attachments, url = workflow_attachments(main, "WDL"), main.name
        doc = load_wdl(attachments, url)  # refused here with the server's own words, before any upload
    params, local = _wdl_params(args, doc)
    hg = _hg(args)
    params = _upload_wdl_files(hg, params, local, doc, args)
    run_id = hg.submit_run(
        url,
        params,
        attachments=attachments,
        tags=tags,
        workflow_type="WDL",
        workflow_type_version=args.workflow_type_version,
    )
    if not args.wait:
        emit(args, {"run_id": run_id}, lambda d: d["run_id"])
        return 0
    if not args.json:
        print(f"submitted run {run_id}; waiting", file=sys.stderr)
    return _finish(args, hg, run_id, hg.wait(run_id, timeout=args.timeout))


def cmd_run_submit(args: argparse.Namespace) -> int:
    tags = dict(_split_kv(t, "--tag") for t in args.tag or [])
    if language_of(args.workflow, args.workflow_type) == "WDL":
        return _submit_wdl(args, tags)
    params: dict[str, Any] = {}
    if args.inputs_json:
        params = _mark_local_files(*_inputs_document(args.inputs_json))
    for item in args.input or []:
        name, value = _split_kv(item, "--input", "NAME=VALUE")
        params[name] = _cli_input(value)
    attachments: dict[str, bytes] | None = None
    url = args.workflow
    if "://" not in url:
        main = Path(url)
        if not main.is_file():
            raise BadRequest(f"workflow {url}: no such file (give a local .cwl file or trs://host/tool/version)")
        attachments, url = workflow_attachments(main), main.name
    hg = _hg(args)
    params = _upload_local_inputs(hg, params, args)
    run_id = hg.submit_run(
        url, params, attachments=attachments, tags=tags, workflow_type_version=args.workflow_type_version
    )
    if not args.wait:
        emit(args, {"run_id": run_id}, lambda d: d["run_id"])
        return 0
    if not args.json:
        print(f"submitted run {run_id}; waiting", file=sys.stderr)
    return _finish(args, hg, run_id, hg.wait(run_id, timeout=args.timeout))


def cmd_run_status(args: argparse.Namespace) -> int:
    state = _hg(args).run_status(args.run_id)
    emit(args, {"run_id": args.run_id, "state": state}, lambda d: f"{d['run_id']}  {d['state']}")
    return 0


def cmd_run_wait(args: argparse.Namespace) -> int:
    hg = _hg(args)
    return _finish(args, hg, args.run_id, hg.wait(args.run_id, timeout=args.timeout))


def cmd_run_logs(args: argparse.Namespace) -> int:
    stream = "stderr" if args.stderr else "stdout"
    text = _hg(args).run_stream(args.run_id, stream, task_id=args.task)
    if args.json:
        emit(args, {"run_id": args.run_id, "task_id": args.task, "stream": stream, "text": text})
    else:
        sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    return 0


def cmd_run_tasks(args: argparse.Namespace) -> int:
    tasks = _hg(args).run_tasks(args.run_id)
    rows = [
        (
            t.get("id"),
            t.get("name"),
            "-" if t.get("exit_code") is None else t["exit_code"],
            t.get("start_time") or "-",
            t.get("end_time") or "-",
        )
        for t in tasks
    ]
    emit(args, {"run_id": args.run_id, "tasks": tasks}, lambda _: table(rows, ("TASK", "NAME", "EXIT", "START", "END")))
    return 0


def cmd_run_cancel(args: argparse.Namespace) -> int:
    hg = _hg(args)
    hg.cancel_run(args.run_id)
    state = hg.run_status(args.run_id)
    emit(
        args,
        {"run_id": args.run_id, "state": state},
        lambda d: f"cancel requested for run {d['run_id']} (now {d['state']})",
    )
    return 0


def cmd_run_outputs(args: argparse.Namespace) -> int:
    hg = _hg(args)
    if not args.download:
        outputs = hg.run_log(args.run_id).get("outputs") or {}
        rows = [(f.name, f.uri, f.checksum or "-") for f in output_files(outputs)]
        emit(args, {"run_id": args.run_id, "outputs": outputs}, lambda _: table(rows, ("OUTPUT", "LOCATION", "SHA256")))
        return 0
    progress = _progress(args, "downloading outputs")
    try:
        done = hg.download_outputs(args.run_id, Path(args.download), progress=progress)
    finally:
        progress.finish()
    files = [
        {
            "name": out.name,
            "uri": got.uri,
            "path": str(got.path),
            "sha256": got.sha256,
            "size": got.size,
            "verified": True,
        }
        for out, got in done
    ]
    emit(
        args,
        {"run_id": args.run_id, "files": files},
        lambda d: "\n".join(
            [
                f"{f['name']}  {f['uri']} -> {f['path']}  {f['size']} bytes  sha256 {f['sha256']}  verified"
                for f in d["files"]
            ]
            or [f"run {args.run_id} has no drs:// output files"]
        ),
    )
    return 0


# =========================================================================== parser
def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``tool``, ``data`` and ``run`` command groups."""
    tool = sub.add_parser("tool", help="tool developers: create, publish, show and verify tools").add_subparsers(
        dest="sub", required=True
    )
    p = add(tool, "create", cmd_tool_create, "create a tool (you become its owner)")
    p.add_argument("organization")
    p.add_argument("name")
    p.add_argument("--id", help="tool id (default: <organization>.<name> as a slug)")
    p.add_argument("--description")
    p = add(tool, "publish", cmd_tool_publish, "publish a pinned, checksummed, signed version")
    p.add_argument("tool_id")
    p.add_argument("version", help="semantic version, e.g. 1.0.0 (versions are immutable)")
    p.add_argument("--image", action="append", required=True, help="image reference (repeatable; the first is signed)")
    p.add_argument("--descriptor", required=True, help="the primary descriptor file")
    p.add_argument("--file", action="append", help="secondary descriptor (repeatable; relative to the primary's dir)")
    p.add_argument(
        "--descriptor-type",
        choices=["CWL", "WDL"],
        help="default: WDL for a .wdl descriptor (its imports are attached), else CWL",
    )
    p = add(tool, "show", cmd_tool_show, "a tool and its versions, or one version's pinning and signing record")
    p.add_argument("tool_id")
    p.add_argument("version", nargs="?")
    p = add(tool, "verify", cmd_tool_verify, "re-verify a version's signature and file checksums on this machine")
    p.add_argument("tool_id")
    p.add_argument("version")
    p.add_argument("--trust-material", help="trust material saved earlier (`tool trust -o`); default: the registry's")
    p = add(tool, "trust", cmd_tool_trust, "the registry's signing trust material (to pin for `tool verify`)")
    p.add_argument("--output", "-o")

    data = sub.add_parser("data", help="data stewards: upload, register, datasets, grants, verify").add_subparsers(
        dest="sub", required=True
    )
    p = add(data, "upload", cmd_data_upload, "upload a file (checksummed locally; safe to retry)")
    p.add_argument("file")
    p.add_argument("--name", help="object name (default: the file name)")
    p.add_argument("--dataset", help="dataset id")
    p.add_argument("--sha256", help="the checksum you expect the file to have")
    p.add_argument("--retries", type=int, default=3, help="retries after connection errors (default 3)")
    p.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a terminal")
    p = add(data, "register", cmd_data_register, "register an existing s3:// object in place")
    p.add_argument("s3_url", metavar="S3_URL", help="s3://bucket/key")  # not "url": that is --url
    p.add_argument("--name")
    p.add_argument("--dataset")
    p.add_argument("--sha256", help="the checksum you expect")
    ds = data.add_parser("dataset", help="datasets").add_subparsers(dest="subsub", required=True)
    p = add(ds, "create", cmd_data_dataset_create, "create a dataset")
    p.add_argument("name")
    p.add_argument("--public", action="store_true", help="readable by every user")
    for name, func, help_ in (
        ("grant", cmd_data_grant, "grant a user read access to a dataset"),
        ("revoke", cmd_data_revoke, "revoke a user's read access to a dataset"),
    ):
        p = add(data, name, func, help_)
        p.add_argument("dataset")
        p.add_argument("user")
    p = add(data, "show", cmd_data_show, "an object's metadata")
    p.add_argument("object", help="object id or drs:// URI")
    p = add(data, "verify", cmd_data_verify, "download an object and check its SHA-256 here")
    p.add_argument("object", help="object id or drs:// URI")
    p.add_argument("--output", "-o", help="keep the verified bytes in this file")
    p.add_argument("--progress", action="store_true")

    run = sub.add_parser("run", help="workflow users: submit and follow runs").add_subparsers(dest="sub", required=True)
    p = add(run, "submit", cmd_run_submit, "submit a workflow run")
    p.add_argument(
        "workflow",
        help="a local .cwl or .wdl file (the documents it references or imports are attached) "
        "or trs://host/tool/version",
    )
    p.add_argument(
        "--workflow-type", choices=["CWL", "WDL"], help="default: WDL for a .wdl file, else CWL (say WDL for a TRS WDL)"
    )
    p.add_argument(
        "--workflow-type-version", help="default: v1.2 for CWL; for WDL the version the document (or TRS) declares"
    )
    p.add_argument(
        "--input",
        action="append",
        metavar="NAME=VALUE",
        help="drs:// URI, local file (uploaded) or value; WDL names are wf.input or input",
    )
    p.add_argument(
        "--inputs-json",
        help="inputs as a JSON object (File locations relative to it are uploaded; for WDL, Cromwell-style)",
    )
    p.add_argument("--dataset", help="dataset for uploaded local inputs")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--wait", action="store_true", help="wait for the run; exit 0 only when it is COMPLETE")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--progress", action="store_true")
    for name, func, help_ in (
        ("status", cmd_run_status, "a run's state"),
        ("tasks", cmd_run_tasks, "a run's tasks"),
        ("cancel", cmd_run_cancel, "cancel a run"),
    ):
        add(run, name, func, help_).add_argument("run_id")
    p = add(run, "wait", cmd_run_wait, "wait for a run to finish; exit 0 only when it is COMPLETE")
    p.add_argument("run_id")
    p.add_argument("--timeout", type=float, default=3600)
    p = add(run, "logs", cmd_run_logs, "a run's (or one task's) stdout, or stderr")
    p.add_argument("run_id")
    p.add_argument("--task", help="task id (see `run tasks`)")
    p.add_argument("--stderr", action="store_true")
    p = add(run, "outputs", cmd_run_outputs, "a run's outputs; --download fetches and verifies every output file")
    p.add_argument("run_id")
    p.add_argument("--download", metavar="DIR")
    p.add_argument("--progress", action="store_true")
