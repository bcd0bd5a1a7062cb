"""WDL documents and their inputs, checked with miniwdl's own parser and type checker.

WDL documents are untrusted user code. :func:`load_wdl` parses and type-checks a document from
an in-memory set of files through a restricted ``read_source``: an import may name only another
of those files, by a relative path without ``..`` and without a URL scheme, so loading never
reads the host's file system or the network. :func:`check_inputs` applies the WDL types to a
run's inputs and lets a ``File`` be only a ``drs://`` object or one of the run's own attached
files. Every refusal is a :class:`WdlDocumentError` (a 400) whose message names the problem.

Shared by WES submission, TRS publish, the CLI and the engine process (which loads the same
files with the same restriction), so it imports only the standard library, ``WDL`` (miniwdl)
and the core's error/path/URI rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import posixpath
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import WDL

from helixgate.errors import BadRequest
from helixgate.paths import check_relative_path
from helixgate.uris import parse_drs, scheme_of

SUPPORTED_VERSIONS = ("1.0", "1.1")
IMPORT_MAX_DEPTH = 10
MAX_MESSAGE = 400
# Where loaded documents claim to live: a name, never a host directory that gets read.
VIRTUAL_ROOT = "/helixgate-wdl"


class WdlDocumentError(BadRequest):
    """A WDL document, import or input the platform refuses; ``message`` names the problem."""


@dataclass(frozen=True)
class TaskImage:
    """A task's container image as written in its ``runtime``/``requirements`` section:
    ``image`` is None when no image is named, ``literal`` False when it is an expression."""

    task: str
    key: str | None
    image: str | None
    literal: bool


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def import_name(uri: str, importer: str | None) -> str:
    """The run-relative file name an import ``uri`` written in ``importer`` refers to, or
    WdlDocumentError: only relative paths inside the run's files (no URL, no absolute path,
    no ``..``)."""
    where = f" (imported by {importer})" if importer else ""
    if not isinstance(uri, str) or not uri.strip():
        raise WdlDocumentError(f"WDL import{where} names no file")
    if scheme_of(uri) is not None or "://" in uri:
        raise WdlDocumentError(
            f"WDL import {uri[:120]!r}{where} is a URL: imports may name only the workflow's own files"
        )
    if uri.startswith("/") or uri.startswith("~"):
        raise WdlDocumentError(
            f"WDL import {uri[:120]!r}{where} is an absolute path: imports must be relative to the importing file"
        )
    rel = uri[2:] if uri.startswith("./") else uri
    base = posixpath.dirname(importer) if importer else ""
    name = posixpath.join(base, rel) if base else rel
    try:
        check_relative_path(name, "WDL import")
    except BadRequest as exc:
        raise WdlDocumentError(f"{exc.message}{where}") from None
    return name


def _read_source_for(files: Mapping[str, bytes], root: str) -> Any:
    prefix = root.rstrip("/") + "/"

    async def read_source(uri: str, path: list[str], importer: WDL.Document | None) -> WDL.ReadSourceResult:
        importer_name = None
        if importer is not None:
            abspath = importer.pos.abspath
            if not abspath.startswith(prefix):  # cannot happen: every document came from here
                raise WdlDocumentError("WDL import from a document outside the workflow's files")
            importer_name = abspath[len(prefix) :]
        name = import_name(uri, importer_name)
        if name not in files:
            where = f" (imported by {importer_name})" if importer_name else ""
            raise WdlDocumentError(f"WDL file {name!r}{where} is not among the workflow's files")
        try:
            text = files[name].decode("utf-8")
        except UnicodeDecodeError:
            raise WdlDocumentError(f"WDL file {name!r} is not UTF-8 text") from None
        return WDL.ReadSourceResult(source_text=text, abspath=prefix + name)

    return read_source


def _position(pos: Any, root: str) -> str:
    uri = getattr(pos, "abspath", "") or getattr(pos, "uri", "") or ""
    prefix = root.rstrip("/") + "/"
    if uri.startswith(prefix):
        uri = uri[len(prefix) :]
    line = getattr(pos, "line", 0)
    column = getattr(pos, "column", 0)
    return f"{uri}:{line}:{column}" if uri else f"{line}:{column}"


def _explain(exc: BaseException, root: str) -> str:
    """A short message for a miniwdl load failure: the innermost cause of an import failure,
    each error with its file:line:column (run-relative, never a host path)."""
    if isinstance(exc, WdlDocumentError):
        return exc.message
    if isinstance(exc, WDL.Error.ImportError):
        cause = exc.__cause__
        if isinstance(cause, WdlDocumentError):
            return cause.message
        if cause is not None:
            return _explain(cause, root)
        return f"{_position(exc.pos, root)}: {exc}"
    if isinstance(exc, WDL.Error.MultipleValidationErrors):
        parts = [_explain(e, root) for e in exc.exceptions[:3]]
        more = len(exc.exceptions) - len(parts)
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    if isinstance(exc, (WDL.Error.SyntaxError, WDL.Error.ValidationError)):
        return f"{_position(exc.pos, root)}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _run_load(files: Mapping[str, bytes], main: str, root: str) -> WDL.Document:
    return WDL.load(
        main,
        path=[],
        read_source=_read_source_for(files, root),
        import_max_depth=IMPORT_MAX_DEPTH,
    )


def load_wdl(files: Mapping[str, bytes], main: str, *, root: str = VIRTUAL_ROOT) -> WDL.Document:
    """Parse and type-check ``main`` (a key of ``files``) and its imports, which may name only
    other keys of ``files``. Every document must declare a supported WDL version. ``root`` is
    the directory the documents claim to live in (their ``pos.abspath``); nothing is read there.

    Raises WdlDocumentError naming the file, line and problem."""
    if main not in files:
        raise WdlDocumentError(f"workflow file {main[:120]!r} is not among the workflow's files")
    import_name(main, None)  # the main file obeys the same rule as an import
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            doc = _run_load(files, main, root)
        else:  # miniwdl runs its own event loop: never inside a running one
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                doc = pool.submit(_run_load, files, main, root).result()
    except WdlDocumentError:
        raise
    except RecursionError:
        raise WdlDocumentError(f"WDL document {main!r} is nested too deeply") from None
    except Exception as exc:  # miniwdl's syntax, validation and import errors
        raise WdlDocumentError(_short(f"invalid WDL document {main!r}: {_explain(exc, root)}")) from None
    _check_versions(doc, root)
    return doc


def _documents(doc: WDL.Document) -> Iterator[WDL.Document]:
    seen: set[int] = set()
    stack = [doc]
    while stack:
        d = stack.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        yield d
        stack.extend(imp.doc for imp in d.imports if imp.doc is not None)


def _check_versions(doc: WDL.Document, root: str) -> None:
    for d in _documents(doc):
        version = wdl_version(d)
        if version not in SUPPORTED_VERSIONS:
            where = _position(d.pos, root).split(":", 1)[0]
            raise WdlDocumentError(
                f"WDL file {where!r} declares version {version!r}; supported: {', '.join(SUPPORTED_VERSIONS)}"
                + (" (a document without a 'version' line is draft-2)" if version == "draft-2" else "")
            )


def wdl_version(doc: WDL.Document) -> str:
    """The WDL version ``doc`` declares (``draft-2`` when it declares none)."""
    return str(doc.wdl_version) if doc.wdl_version else "draft-2"


def declared_version(content: bytes, name: str) -> str:
    """The version one WDL file declares (parsed, imports not followed): what a client sends as
    workflow_type_version. WdlDocumentError if it does not parse."""
    return wdl_version(_parse(content, name))


def _parse(content: bytes, name: str) -> WDL.Document:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise WdlDocumentError(f"WDL file {name!r} is not UTF-8 text") from None
    try:
        return WDL.parse_document(text, uri=name)
    except Exception as exc:
        raise WdlDocumentError(_short(f"invalid WDL document {name!r}: {_explain(exc, '')}")) from None


def wdl_imports(content: bytes, name: str) -> list[str]:
    """Run-relative names of the files ``content`` (the file ``name``) imports, parsed, not
    loaded, so the CLI can attach a local workflow's files. WdlDocumentError if it does not parse
    or an import is not a relative path inside the workflow's directory."""
    doc = _parse(content, name)
    out: list[str] = []
    for imp in doc.imports:
        target = import_name(imp.uri, name)
        if target not in out:
            out.append(target)
    return out


def target_of(doc: WDL.Document) -> WDL.Workflow | WDL.Task:
    """What a run executes: the document's workflow, or its only task."""
    if doc.workflow is not None:
        return doc.workflow
    if len(doc.tasks) == 1:
        return doc.tasks[0]
    raise WdlDocumentError(
        "WDL document has no workflow" + (f" and {len(doc.tasks)} tasks: name one in a workflow" if doc.tasks else "")
    )


def task_images(doc: WDL.Document) -> list[TaskImage]:
    """Every task's container image in ``doc`` and its imports, as written: the value of
    ``runtime.docker`` or ``runtime.container`` (WDL 1.1; a list's first entry when literal)."""
    out: list[TaskImage] = []
    for d in _documents(doc):
        for task in d.tasks:
            key = next((k for k in ("container", "docker") if k in task.runtime), None)
            if key is None:
                out.append(TaskImage(task.name, None, None, True))
                continue
            expr = task.runtime[key]
            image = _literal_image(expr)
            out.append(TaskImage(task.name, key, image, image is not None))
    return out


def _literal_image(expr: Any) -> str | None:
    if isinstance(expr, WDL.Expr.Array):
        items = [_literal_image(item) for item in expr.items]
        return items[0] if len(items) == 1 else None
    if isinstance(expr, WDL.Expr.String):
        value = expr.literal
        if isinstance(value, WDL.Value.String):
            return str(value.value)
    return None


def check_inputs(
    doc: WDL.Document,
    inputs: Mapping[str, Any],
    *,
    attachments: Collection[str] = (),
) -> None:
    """Refuse inputs the run's target (workflow, or single task) does not declare, required
    inputs that are missing, values of the wrong WDL type, runtime overrides, and ``File`` or
    ``Directory`` values other than a ``drs://`` object or the name of an attached file. Keys
    may carry the workflow's name as a prefix (``wf.x``) or not (``x``)."""
    target = target_of(doc)
    namespace = target.name + "."
    available = target.available_inputs
    for key in inputs:
        if not isinstance(key, str):
            raise WdlDocumentError("workflow_params keys must be strings")
        if key.startswith("#"):
            continue  # Cromwell-style comment, ignored by miniwdl too
        name = key[len(namespace) :] if key.startswith(namespace) else key
        if any(part.startswith("_") or part in ("runtime", "requirements") for part in name.split(".")):
            raise WdlDocumentError(f"workflow_params {key[:120]!r}: runtime settings cannot be set by inputs")
        if name not in available:
            raise WdlDocumentError(
                f"workflow_params {key[:120]!r} is not an input of {target.name}"
                f" (inputs: {', '.join(sorted(b.name for b in available))[:200] or 'none'})"
            )
    try:
        values = WDL.values_from_json(dict(inputs), available, target.required_inputs, namespace=target.name)
    except WDL.Error.InputError as exc:
        raise WdlDocumentError(_short(f"workflow_params: {exc}")) from None
    except Exception as exc:  # a value miniwdl cannot read as its declared type
        raise WdlDocumentError(_short(f"workflow_params: {type(exc).__name__}: {exc}")) from None
    attached = set(attachments)
    for binding in values:
        for kind, path in _paths(binding.value):
            _check_path(binding.name, kind, path, attached)
    # a literal default is an input too: a File default must obey the same rule
    for input_decl in available:
        decl = input_decl.value
        if input_decl.name in values or decl.expr is None or not _has_file(decl.type):
            continue
        literal = decl.expr.literal if isinstance(decl.expr, WDL.Expr.String) else None
        if isinstance(literal, WDL.Value.String):
            _check_path(input_decl.name, "File", str(literal.value), attached, default=True)


def _has_file(ty: Any) -> bool:
    if isinstance(ty, (WDL.Type.File, WDL.Type.Directory)):
        return True
    return any(_has_file(p) for p in getattr(ty, "parameters", []))


def _paths(value: Any) -> Iterator[tuple[str, str]]:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, WDL.Value.File):
            yield "File", str(v.value)
        elif isinstance(v, WDL.Value.Directory):
            yield "Directory", str(v.value)
        else:
            stack.extend(v.children)


def _check_path(name: str, kind: str, path: str, attached: set[str], *, default: bool = False) -> None:
    what = f"input {name!r}" + (" (its default)" if default else "")
    try:
        if parse_drs(path) is not None:
            return
    except BadRequest as exc:  # e.g. surrounding whitespace
        raise WdlDocumentError(f"{what}: {exc.message}") from None
    if kind == "Directory":
        raise WdlDocumentError(f"{what}: Directory {path[:120]!r} must be a drs:// object")
    rel = path[2:] if path.startswith("./") else path
    if rel in attached:
        return
    raise WdlDocumentError(
        f"{what}: File {path[:120]!r} must be a drs:// object or one of the run's attached files"
        + (" (host paths are never read)" if path.startswith("/") or scheme_of(path) == "file" else "")
    )


def replace_files(
    doc: WDL.Document, inputs: Mapping[str, Any], replace: Callable[[str, str], str]
) -> dict[str, Any]:
    """A copy of ``inputs`` where every value the target's declared types make a ``File`` (inside
    arrays, maps, pairs and structs too) is ``replace(input_name, value)``: how a client turns
    local paths into ``drs://`` URIs without guessing which strings are files. Keys that are not
    inputs are copied unchanged (the server refuses them)."""
    target = target_of(doc)
    namespace = target.name + "."
    available = target.available_inputs
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        name = key[len(namespace) :] if key.startswith(namespace) else key
        decl = available.get(name) if name in available else None
        out[key] = _replace(decl.type, value, key, replace) if decl is not None else value
    return out


def _replace(ty: Any, value: Any, name: str, replace: Callable[[str, str], str]) -> Any:
    if isinstance(ty, WDL.Type.File) and isinstance(value, str):
        return replace(name, value)
    if isinstance(ty, WDL.Type.Array) and isinstance(value, list):
        return [_replace(ty.item_type, v, f"{name}[{i}]", replace) for i, v in enumerate(value)]
    if isinstance(ty, WDL.Type.Map) and isinstance(value, dict):
        return {k: _replace(ty.item_type[1], v, f"{name}[{k}]", replace) for k, v in value.items()}
    if isinstance(ty, WDL.Type.Pair) and isinstance(value, dict):
        sides = {"left": ty.left_type, "right": ty.right_type}
        return {k: _replace(sides.get(k.lower()), v, f"{name}.{k}", replace) for k, v in value.items()}
    if isinstance(ty, WDL.Type.StructInstance) and ty.members and isinstance(value, dict):
        return {k: _replace(ty.members.get(k), v, f"{name}.{k}", replace) for k, v in value.items()}
    return value
