"""View models of the analysts' pages, built from the public APIs' answers (plain functions,
no Flask, no HTTP): the runs list and its filters, a run with its task timeline and each
task's verification evidence, its outputs, and the submission form of a TRS tool version
with its parameters validated before anything is sent to WES.

Everything here reads JSON the APIs returned; nothing is trusted for more than display
(the gate in the worker is what decides), and nothing is computed that the API did not say.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import yaml
from werkzeug.routing import BuildError

from helixgate.errors import BadRequest
from helixgate.sdk import TERMINAL, OutputFile, output_files
from helixgate.uris import parse_drs
from helixgate.wdl_documents import WdlDocumentError, check_inputs, target_of, wdl_version

RUN_STATES = (
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "CANCELING",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "PREEMPTED",
    "UNKNOWN",
)
PAGE_SIZES = (10, 25, 50, 100)
MAX_DESCRIPTOR_BYTES = 1024 * 1024
MAX_WDL_FILES = 50
LANGUAGES = ("CWL", "WDL")
_TAG_PART = re.compile(r"^[^:\s][^:]{0,127}$")
_EXPECTED_ACTUAL = re.compile(r"expected (\S+?),? got (\S+?)[.,;)]?(?:\s|$)")


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (API answers are read defensively)."""
    return value if isinstance(value, dict) else {}


def state_class(state: str) -> str:
    """The badge class of a WES state (ui.css: badge-ok, badge-bad, badge-warn, badge-idle)."""
    if state == "COMPLETE":
        return "badge-ok"
    if state in ("EXECUTOR_ERROR", "SYSTEM_ERROR"):
        return "badge-bad"
    if state in ("RUNNING", "INITIALIZING", "CANCELING"):
        return "badge-warn"
    return "badge-idle"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def show_time(value: Any) -> str:
    """``2026-11-29 15:40:02 UTC`` (empty when unknown)."""
    moment = parse_time(value)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def duration(start: Any, end: Any, now: datetime | None = None) -> str:
    a, b = parse_time(start), parse_time(end) or (now if parse_time(start) else None)
    if a is None or b is None:
        return ""
    seconds = max(0.0, (b - a).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# ---------------------------------------------------------------------- runs list
@dataclass(frozen=True)
class RunFilter:
    state: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    page_size: int = 25

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> tuple[RunFilter, list[str]]:
        """The filter the query string asks for, and what was wrong with it (dropped)."""
        errors: list[str] = []
        state = str(args.get("state") or "").strip().upper()
        if state and state not in RUN_STATES:
            errors.append(f"unknown state {state[:40]!r}")
            state = ""
        tags: list[tuple[str, str]] = []
        raw_tags = args.getlist("tag") if hasattr(args, "getlist") else [args.get("tag") or ""]
        for raw in raw_tags:
            raw = str(raw).strip()
            if not raw:
                continue
            key, sep, value = raw.partition(":")
            if not sep or not _TAG_PART.match(key) or len(value) > 512:
                errors.append(f"tag filter must be key:value, got {raw[:80]!r}")
                continue
            tags.append((key.strip(), value.strip()))
        try:
            page_size = int(args.get("page_size") or 25)
        except ValueError:
            page_size = 25
        if not 1 <= page_size <= max(PAGE_SIZES):
            page_size = 25
        return cls(state, tuple(tags), page_size), errors

    def api_params(self, page_token: str = "") -> dict[str, Any]:
        """Query parameters of WES ``GET /runs`` (``state`` and ``tag`` are HelixGate extensions)."""
        params: dict[str, Any] = {"page_size": self.page_size}
        if self.state:
            params["state"] = self.state
        if self.tags:
            params["tag"] = [f"{k}:{v}" for k, v in self.tags]
        if page_token:
            params["page_token"] = page_token
        return params

    def query(self) -> dict[str, Any]:
        """The same filter as this page's own query string (for paging links)."""
        q: dict[str, Any] = {"page_size": self.page_size}
        if self.state:
            q["state"] = self.state
        if self.tags:
            q["tag"] = [f"{k}:{v}" for k, v in self.tags]
        return q

    @property
    def tag_text(self) -> str:
        return " ".join(f"{k}:{v}" for k, v in self.tags)


@dataclass(frozen=True)
class RunItem:
    run_id: str
    state: str
    state_class: str
    start: str
    end: str
    took: str
    tags: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RunList:
    runs: list[RunItem]
    next_page_token: str


def run_list(answer: Mapping[str, Any], now: datetime | None = None) -> RunList:
    """WES ``RunListResponse`` -> rows (the key is ``runs``; ``next_page_token`` is "" at the end)."""
    items = []
    for r in answer.get("runs") or []:
        if not isinstance(r, dict) or not r.get("run_id"):
            continue
        state = str(r.get("state") or "UNKNOWN")
        tags = _obj(r.get("tags"))
        items.append(
            RunItem(
                run_id=str(r["run_id"]),
                state=state,
                state_class=state_class(state),
                start=show_time(r.get("start_time")),
                end=show_time(r.get("end_time")),
                took=duration(r.get("start_time"), r.get("end_time"), now) if state not in ("QUEUED",) else "",
                tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())),
            )
        )
    return RunList(items, str(answer.get("next_page_token") or ""))


# ---------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Bar:
    """One task on the timeline, as percentages of the run's span (drawn as SVG geometry:
    the CSP forbids inline styles)."""

    left: float
    width: float


@dataclass(frozen=True)
class InputCheck:
    path: str
    source: str
    expected: str
    actual: str
    verdict: str  # "match", "mismatch", "unrecorded" (a task recorded before expected was kept)


@dataclass(frozen=True)
class Refusal:
    message: str
    subject: str = ""
    expected: str = ""
    actual: str = ""


@dataclass(frozen=True)
class TaskView:
    task_id: str
    name: str
    state: str
    state_class: str
    start: str
    end: str
    took: str
    exit_code: int | None
    bar: Bar | None
    image_reference: str
    image_verified: bool
    image_id: str
    pinned_ref: str
    signer: str
    signed_tool: str
    inputs: list[InputCheck]
    outputs: list[dict[str, Any]]
    refusal: Refusal | None
    system_logs: list[str]


@dataclass(frozen=True)
class OutputView:
    index: int
    name: str
    basename: str
    uri: str
    checksum: str


@dataclass(frozen=True)
class RunView:
    run_id: str
    state: str
    state_class: str
    terminal: bool
    start: str
    end: str
    took: str
    workflow_url: str
    workflow_type: str
    params_json: str
    tags: tuple[tuple[str, str], ...]
    tasks: list[TaskView]
    outputs: list[OutputView]
    system_logs: list[str]
    refusals: list[Refusal]
    can_cancel: bool
    evidence_available: bool = True
    notes: list[str] = field(default_factory=list)


def refusal_of(message: str) -> Refusal:
    """A refusal read from a log line: the gate's messages end with 'expected X, got Y'."""
    m = _EXPECTED_ACTUAL.search(message)
    return Refusal(message, "", m.group(1), m.group(2)) if m else Refusal(message)


_REFUSAL_WORDS = ("refused", "differs from the signed", "sha256 mismatch", "not signed", "no signature", "integrity")


def run_refusals(system_logs: Sequence[str]) -> list[Refusal]:
    """The run log lines that record a verification refusal (with expected/actual when said)."""
    return [refusal_of(line) for line in system_logs if any(w in line.lower() for w in _REFUSAL_WORDS)]


def _bars(tasks: Sequence[Mapping[str, Any]], now: datetime) -> list[Bar | None]:
    spans = []
    for t in tasks:
        a = parse_time(t.get("start_time"))
        b = parse_time(t.get("end_time")) or (now if a else None)
        spans.append((a, b))
    starts = [a for a, _ in spans if a]
    ends = [b for _, b in spans if b]
    if not starts or not ends:
        return [None] * len(tasks)
    t0, t1 = min(starts), max(ends)
    total = max((t1 - t0).total_seconds(), 1e-3)
    bars: list[Bar | None] = []
    for a, b in spans:
        if a is None or b is None:
            bars.append(None)
            continue
        left = (a - t0).total_seconds() / total * 100
        width = max((b - a).total_seconds() / total * 100, 0.8)  # a visible sliver for instant tasks
        bars.append(Bar(round(min(left, 99.2), 2), round(min(width, 100 - min(left, 99.2)), 2)))
    return bars


def _input_checks(inputs: Any) -> list[InputCheck]:
    checks = []
    for i in inputs or []:
        if not isinstance(i, dict):
            continue
        expected, actual = str(i.get("expected") or ""), str(i.get("actual") or "")
        verdict = "unrecorded" if not expected else ("match" if expected == actual else "mismatch")
        checks.append(InputCheck(str(i.get("path", "")), str(i.get("source", "")), expected, actual, verdict))
    return checks


def task_views(
    task_logs: Sequence[Mapping[str, Any]], evidence: Sequence[Mapping[str, Any]], now: datetime
) -> list[TaskView]:
    """Tasks in start order, each joined with its evidence (``GET /x-helixgate/runs/{id}/evidence``)."""
    by_id = {str(e.get("task_id")): e for e in evidence if isinstance(e, dict)}
    bars = _bars(task_logs, now)
    views = []
    for t, bar in zip(task_logs, bars, strict=True):
        task_id = str(t.get("id") or "")
        ev = by_id.get(task_id, {})
        image = _obj(ev.get("image"))
        state = str(ev.get("state") or _task_state(t))
        refusal = _obj(ev.get("refusal")) or None
        tool = f"{image.get('tool_id')} {image.get('version_id')}" if image.get("tool_id") else ""
        views.append(
            TaskView(
                task_id=task_id,
                name=str(t.get("name") or task_id),
                state=state,
                state_class=state_class(state),
                start=show_time(t.get("start_time")),
                end=show_time(t.get("end_time")),
                took=duration(t.get("start_time"), t.get("end_time"), now),
                exit_code=t.get("exit_code") if isinstance(t.get("exit_code"), int) else None,
                bar=bar,
                image_reference=str(image.get("reference") or ""),
                image_verified=bool(image.get("verified")),
                image_id=str(image.get("image_id") or ""),
                pinned_ref=str(image.get("pinned_ref") or ""),
                signer=str(image.get("signer") or ""),
                signed_tool=tool,
                inputs=_input_checks(ev.get("inputs")),
                outputs=[o for o in ev.get("outputs") or [] if isinstance(o, dict)],
                refusal=Refusal(
                    str(refusal.get("message", "")),
                    str(refusal.get("subject") or ""),
                    str(refusal.get("expected") or ""),
                    str(refusal.get("actual") or ""),
                )
                if refusal
                else None,
                system_logs=[str(x) for x in t.get("system_logs") or []],
            )
        )
    return views


def _task_state(t: Mapping[str, Any]) -> str:
    """WES TaskLog has no state: what its times and exit code say."""
    if t.get("exit_code") is not None:
        return "COMPLETE" if t.get("exit_code") == 0 else "EXECUTOR_ERROR"
    if t.get("end_time"):
        return "EXECUTOR_ERROR"
    return "RUNNING" if t.get("start_time") else "QUEUED"


def run_view(
    run_log: Mapping[str, Any],
    task_logs: Sequence[Mapping[str, Any]],
    evidence: Sequence[Mapping[str, Any]] | None,
    permissions: set[str] | frozenset[str],
    now: datetime | None = None,
) -> RunView:
    """A run page from WES ``GET /runs/{id}``, its task logs, and its evidence (None when the
    evidence API refused or is absent: the page says so instead of inventing any)."""
    now = now or datetime.now(timezone.utc)
    state = str(run_log.get("state") or "UNKNOWN")
    log = _obj(run_log.get("run_log"))
    request = _obj(run_log.get("request"))
    params = request.get("workflow_params")
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            pass
    tags = _obj(request.get("tags"))
    system_logs = [str(x) for x in log.get("system_logs") or []]
    outputs = [
        OutputView(n, f.name, f.basename, f.uri, f.checksum or "")
        for n, f in enumerate(output_files(run_log.get("outputs") or {}))
    ]
    return RunView(
        run_id=str(run_log.get("run_id") or ""),
        state=state,
        state_class=state_class(state),
        terminal=state in TERMINAL,
        start=show_time(log.get("start_time")),
        end=show_time(log.get("end_time")),
        took=duration(log.get("start_time"), log.get("end_time"), now),
        workflow_url=str(request.get("workflow_url") or ""),
        workflow_type=f"{request.get('workflow_type') or ''} {request.get('workflow_type_version') or ''}".strip(),
        params_json=json.dumps(params, indent=2, sort_keys=True) if params is not None else "",
        tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())),
        tasks=task_views(task_logs, evidence or [], now),
        outputs=outputs,
        system_logs=system_logs,
        refusals=run_refusals(system_logs),
        can_cancel="wes:cancel" in permissions and state not in TERMINAL and state != "CANCELING",
        evidence_available=evidence is not None,
    )


def output_at(run_log: Mapping[str, Any], index: int) -> OutputFile | None:
    files = output_files(run_log.get("outputs") or {})
    return files[index] if 0 <= index < len(files) else None


def safe_filename(name: str) -> str:
    """A download file name (Content-Disposition) from a name the server gave."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:150].strip(".")
    return cleaned or "output"


def tail(text: str, limit: int = 200_000) -> tuple[str, bool]:
    """The last ``limit`` characters of a log, and whether anything was cut."""
    return (text[-limit:], True) if len(text) > limit else (text, False)


# ---------------------------------------------------------------------- submission
@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # File, string, int, long, float, double, boolean, or "json" for anything else
    optional: bool
    label: str = ""
    doc: str = ""
    default: Any = None
    declared: str = ""  # the type as written (shown next to a json field)
    language: str = "CWL"  # CWL params are {"class": "File", ...}; WDL params are plain values
    key: str = ""  # the workflow_params key ("wf.x" for WDL); the name when empty

    @property
    def field(self) -> str:
        return f"in.{self.name}"

    @property
    def param(self) -> str:
        return self.key or self.name


_SCALARS = {"File", "string", "int", "long", "float", "double", "boolean"}


def _type_of(declared: Any) -> tuple[str, bool, str]:
    """(kind, optional, as written) of a CWL input type."""
    if isinstance(declared, str):
        text = declared
        optional = text.endswith("?")
        base = text.rstrip("?")
        return (base if base in _SCALARS else "json", optional, text)
    if isinstance(declared, list):  # a union: ["null", T] is an optional T
        rest = [d for d in declared if d != "null"]
        optional = "null" in declared
        if len(rest) == 1 and isinstance(rest[0], str) and rest[0] in _SCALARS:
            return rest[0], optional, json.dumps(declared)
        return "json", optional, json.dumps(declared)
    return "json", False, json.dumps(declared)[:200]


def workflow_inputs(descriptor: str) -> list[InputSpec]:
    """The inputs a CWL document declares (map or list form). BadRequest when it is not CWL
    the form can read; the document is data here (``yaml.safe_load``), never run."""
    if len(descriptor.encode("utf-8")) > MAX_DESCRIPTOR_BYTES:
        raise BadRequest("the primary descriptor is too large to build a form from")
    try:
        doc = yaml.safe_load(descriptor)
    except yaml.YAMLError:
        raise BadRequest("the primary descriptor is not valid YAML/JSON") from None
    if not isinstance(doc, dict) or "inputs" not in doc:
        raise BadRequest("the primary descriptor declares no inputs")
    raw = doc["inputs"]
    entries: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        entries = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, list):
        entries = [(str(e.get("id", "")).lstrip("#"), e) for e in raw if isinstance(e, dict)]
    specs = []
    for name, body in entries:
        if not name:
            continue
        if isinstance(body, dict):
            kind, optional, declared = _type_of(body.get("type"))
            default = body.get("default")
            specs.append(
                InputSpec(
                    name,
                    kind,
                    optional or default is not None,
                    str(body.get("label") or ""),
                    str(body.get("doc") or "") if not isinstance(body.get("doc"), list) else " ".join(body["doc"]),
                    default,
                    declared,
                )
            )
        else:
            kind, optional, declared = _type_of(body)
            specs.append(InputSpec(name, kind, optional, declared=declared))
    return specs


def form_values(specs: Sequence[InputSpec], form: Mapping[str, str]) -> dict[str, str]:
    """The form's answer per input field: a File's picked object, else its typed drs:// URI."""
    values = {k: str(v) for k, v in form.items() if k.startswith(("in.", "uri."))}
    for spec in specs:
        if spec.type == "File" and not values.get(spec.field, "").strip():
            values[spec.field] = values.get(f"uri.{spec.name}", "")
    return values


def validate_params(specs: Sequence[InputSpec], form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``workflow_params`` from the form, and an error per field that is wrong (nothing is sent
    to WES while there is one). File inputs must be drs:// URIs; WES checks the caller may read
    each one again at submission."""
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        raw = str(form.get(spec.field, "")).strip()
        if not raw:
            if spec.type == "boolean" and not (spec.language == "WDL" and spec.optional):
                params[spec.param] = False  # an unchecked box (a WDL optional one may stay unset)
            elif not spec.optional:
                errors[spec.name] = "required"
            continue
        try:
            params[spec.param] = _parse(spec, raw)
        except BadRequest as exc:
            errors[spec.name] = exc.message
    return params, errors


def _parse(spec: InputSpec, raw: str) -> Any:
    if spec.type == "File" and spec.language == "WDL":
        return raw  # a WDL File is a string: check_inputs decides (drs:// only, no host paths)
    if spec.type == "File":
        try:
            ref = parse_drs(raw)
        except BadRequest as exc:
            raise BadRequest(exc.message) from None
        if ref is None:
            raise BadRequest("pick a dataset object or give a drs:// URI")
        return {"class": "File", "location": ref.uri}
    if spec.type in ("int", "long"):
        try:
            return int(raw)
        except ValueError:
            raise BadRequest(f"{raw[:40]!r} is not a whole number") from None
    if spec.type in ("float", "double"):
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(f"{raw[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise BadRequest("the number must be finite")
        return value
    if spec.type == "boolean":
        if raw.lower() in ("true", "on", "yes", "1"):
            return True
        if raw.lower() in ("false", "off", "no", "0"):
            return False
        raise BadRequest("true or false")
    if spec.type == "string":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest(f"not valid JSON for type {spec.declared[:80]}") from None


def file_inputs(params: Mapping[str, Any]) -> list[str]:
    """The drs:// URIs the validated params refer to (checked readable before submission)."""
    return [v["location"] for v in params.values() if isinstance(v, dict) and v.get("class") == "File"]


def file_params(specs: Sequence[InputSpec], params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(input name, drs:// URI) of each File input given, in either language."""
    out = []
    for spec in specs:
        value = params.get(spec.param)
        if spec.type != "File" or value is None:
            continue
        uri = value.get("location") if isinstance(value, dict) else value
        try:
            if isinstance(uri, str) and parse_drs(uri) is not None:
                out.append((spec.name, uri))
        except BadRequest:
            continue  # not a drs:// URI: the validation already said so

    return out


# ---------------------------------------------------------------------- WDL submission
_WDL_KINDS = {"File": "File", "String": "string", "Int": "int", "Float": "float", "Boolean": "boolean"}


def wdl_files(listing: Any) -> tuple[str, list[str]]:
    """TRS ``GET .../WDL/files`` -> (the primary descriptor's path, every descriptor's path).
    BadRequest when the version has no single WDL primary descriptor or too many files."""
    entries = [e for e in listing if isinstance(e, dict)] if isinstance(listing, list) else []
    paths = [
        str(e.get("path") or "")
        for e in entries
        if e.get("file_type") in ("PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR") and e.get("path")
    ]
    primaries = [str(e.get("path")) for e in entries if e.get("file_type") == "PRIMARY_DESCRIPTOR" and e.get("path")]
    if len(primaries) != 1:
        raise BadRequest(f"the version has {len(primaries)} WDL primary descriptors; the form needs exactly one")
    if len(paths) > MAX_WDL_FILES:
        raise BadRequest(f"the version has {len(paths)} WDL files; the form reads at most {MAX_WDL_FILES}")
    return primaries[0], list(dict.fromkeys(paths))


def wdl_inputs(doc: Any) -> list[InputSpec]:
    """The inputs of a loaded WDL document's target (workflow, or its only task): File, String,
    Int, Float and Boolean as typed fields, anything else (arrays, maps, structs) as JSON. An
    input is optional when its type is (``T?``) or it has a default; params are namespaced
    (``wf.x``) as miniwdl reads them."""
    target = target_of(doc)
    required = {b.name for b in target.required_inputs}
    specs = []
    for binding in target.available_inputs:
        decl = binding.value
        declared = str(decl.type)
        base = declared.rstrip("?")
        default = _wdl_default(decl.expr)
        specs.append(
            InputSpec(
                name=binding.name,
                type=_WDL_KINDS.get(base, "json"),
                optional=binding.name not in required,
                default=default,
                declared=declared,
                language="WDL",
                key=f"{target.name}.{binding.name}",
            )
        )
    return specs


def _wdl_default(expr: Any) -> Any:
    """A literal default (shown pre-filled); None for an expression (WDL evaluates it)."""
    literal = getattr(expr, "literal", None) if expr is not None else None
    value = getattr(literal, "value", None) if literal is not None else None
    return value if isinstance(value, (str, int, float, bool)) else None


def check_wdl_params(doc: Any, specs: Sequence[InputSpec], params: Mapping[str, Any]) -> dict[str, str]:
    """miniwdl's verdict on ``params`` (types, required inputs, File = drs:// only), as an error
    on the field it names, else on the form (``_form``); empty when WES may get them."""
    try:
        check_inputs(doc, params)
    except WdlDocumentError as exc:
        message = exc.message
        for spec in sorted(specs, key=lambda s: -len(s.name)):
            named = re.search(rf"(?<![\w.]){re.escape(spec.param)}(?!\w)", message)
            if f"'{spec.name}'" in message or named:
                return {spec.name: message}
        return {"_form": message}
    return {}


def wdl_type_version(doc: Any) -> str:
    """workflow_type_version of a WDL run: what the document declares."""
    return wdl_version(doc)


@dataclass(frozen=True)
class ToolChoice:
    tool_id: str
    name: str
    organization: str
    versions: list[tuple[str, str, bool, str]]  # (version id, label, signed, language)


def tool_choices(tools: Any) -> list[ToolChoice]:
    """TRS ``GET /tools`` -> the tools with CWL or WDL versions an analyst can run, one choice
    per (version, language); the label says the language and its version (``WDL 1.0``)."""
    out = []
    for t in tools if isinstance(tools, list) else []:
        if not isinstance(t, dict) or not t.get("id"):
            continue
        versions = []
        for v in t.get("versions") or []:
            if not isinstance(v, dict) or not v.get("id"):
                continue
            types = v.get("descriptor_type") or ["CWL"]  # an older TRS without the field: CWL
            type_versions = _obj(v.get("descriptor_type_version"))
            signed = bool(v.get("signed") or v.get("verified"))
            name = str(v.get("name") or v.get("id"))
            for language in (lang for lang in LANGUAGES if lang in types):
                said = type_versions.get(language)
                which = " ".join(str(x) for x in said) if isinstance(said, list) and said else ""
                label = f"{name} ({language}{' ' + which if which else ''})"
                versions.append((str(v["id"]), label, signed, language))
        if versions:
            out.append(
                ToolChoice(str(t["id"]), str(t.get("name") or t["id"]), str(t.get("organization") or ""), versions)
            )
    return out


@dataclass(frozen=True)
class ObjectChoice:
    uri: str
    label: str


def object_choices(
    datasets: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
) -> list[tuple[str, list[ObjectChoice]]]:
    """(dataset name, its readable objects as drs:// choices) for the File pickers."""
    groups = []
    for ds, objects in datasets:
        choices = []
        for o in objects:
            uri = str(o.get("self_uri") or "")
            if not uri.startswith("drs://"):
                continue
            sha = next(
                (
                    str(c.get("checksum", ""))[:12]
                    for c in o.get("checksums") or []
                    if isinstance(c, dict) and str(c.get("type", "")).lower() in ("sha-256", "sha256")
                ),
                "",
            )
            label = f"{o.get('name') or o.get('id')} ({_size(o.get('size'))}, sha256 {sha}…)"
            choices.append(ObjectChoice(uri, label))
        if choices:
            groups.append((str(ds.get("name") or ds.get("id")), choices))
    return groups


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "? bytes"
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def parse_tags(text: str) -> tuple[dict[str, str], str]:
    """Run tags from ``key:value`` words, and an error message ('' when fine)."""
    tags: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition(":")
        if not sep or not _TAG_PART.match(key):
            return {}, f"tags must be key:value words, got {word[:80]!r}"
        tags[key] = value
    return tags, ""


# ---------------------------------------------------------------------- landing page
@dataclass(frozen=True)
class Action:
    title: str
    href: str
    text: str


def landing_actions(permissions: set[str] | frozenset[str], url_for: Any) -> list[Action]:
    """What this user can do, from the permissions the APIs enforce (``/me``): one link per
    page group they may use. A group whose pages are not installed (``url_for`` cannot build
    its endpoint) is left out rather than linked to a 404."""
    wanted: list[tuple[str, str, str]] = []
    if "wes:read" in permissions:
        wanted.append(("Runs", "ui.runs.list_runs", "Follow your workflow runs, their evidence and logs."))
    if "wes:submit" in permissions:
        wanted.append(("Submit a workflow", "ui.runs.new_run", "Run a signed TRS tool version on data you can read."))
    if "trs:publish" in permissions:
        wanted.append(("Tools", "ui.tools.index", "Publish tool versions and check their signatures."))
    elif "trs:read" in permissions:
        wanted.append(("Tools", "ui.tools.index", "Browse signed tool versions, their pins and checksums."))
    if "drs:grant" in permissions or "drs:write" in permissions:
        wanted.append(("Data", "ui.data.index", "Register datasets, upload objects and manage grants."))
    elif "drs:read" in permissions:
        wanted.append(("Data", "ui.data.index", "Browse the datasets you may read."))
    if "audit:read" in permissions:
        wanted.append(("Audit trail", "ui.audit.index", "Query the audit trail and verify its chain."))
    acts = []
    for title, endpoint, text in wanted:
        try:
            href = str(url_for(endpoint))
        except BuildError:
            continue
        acts.append(Action(title, href, text))
    return acts
