"""Workflows are untrusted code: the restricted loader.

A workflow may describe work; it may not touch anything but its own verified files. The
CWL loader and the engine are confined with their own extension points:

* ``RunFetcher`` (schema-salad ``Fetcher``, cwltool ``LoadingContext.fetcher_constructor``):
  every document the loader fetches (``$include``, ``$import``, ``$mixin``, ``$schemas``,
  ``run:``) must be a file inside the run's materialized directory (attachments and TRS
  descriptor files, written by the worker after their checksums were checked). Any other
  path, ``..`` out of it, and every other scheme (http, https, ftp, ...) is refused.
* ``check_document_files``: every File/Directory ``location``/``path`` in a loaded
  document (defaults, step defaults, nested ``secondaryFiles``/``listing``) must stay inside
  the run's materialized directory.
* ``check_input_references`` / ``map_input_references``: the same rule for
  ``workflow_params`` (``drs://`` objects and attached files only).
* ``RunFsAccess`` (cwltool ``RuntimeContext.make_fs_access``): the engine's file system
  view is the run's working directory; ``open`` for reading (``loadContents``) returns
  only files whose checksum the run recorded, re-hashed through the handle it returns.

The same loader runs at submission (a refusal is a 400 naming the reference) and again in
the worker before execution.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import posixpath
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, MutableMapping

from cwltool.errors import WorkflowException
from cwltool.stdfsaccess import StdFsAccess, abspath
from schema_salad.exceptions import ValidationException
from schema_salad.fetcher import DefaultFetcher

from helixgate.errors import BadRequest

# cwltool/schema-salad loading is not thread-safe (shared schema caches)
load_lock = threading.Lock()
_FILE_CLASSES = ("File", "Directory")


class Refusals:
    """References the loader or engine refused, in order (shared by one load or run)."""

    def __init__(self, on_refused: Callable[[str, str], None] | None = None) -> None:
        self.items: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._on_refused = on_refused

    def add(self, reference: str, reason: str) -> None:
        with self._lock:
            # one event per reference; a flood (a hostile engine) cannot flood the audit trail
            if len(self.items) >= 100 or any(r == reference for r, _ in self.items):
                return
            self.items.append((reference, reason))
        if self._on_refused is not None:
            self._on_refused(reference, reason)

    def message(self) -> str:
        shown = "; ".join(f"{ref} ({why})" for ref, why in self.items[:5])
        more = f" and {len(self.items) - 5} more" if len(self.items) > 5 else ""
        return f"workflow reference refused: {shown}{more}"

    def __bool__(self) -> bool:
        return bool(self.items)


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (symlinks resolved) is ``root`` or below it."""
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _shown(path: str, root: Path) -> str:
    """A refused path as the client wrote it (relative to the run when it was)."""
    try:
        rel = os.path.relpath(os.path.normpath(path), os.path.realpath(root))
    except ValueError:
        return path
    return rel if not rel.startswith("..") else os.path.normpath(path)


def _local_reference(url: str, root: Path) -> tuple[str | None, str, str]:
    """(local path or None, how to name it, why refused) for a URI the loader resolved."""
    split = urllib.parse.urlsplit(url)
    if split.scheme != "file":
        return None, url[:300], f"scheme {split.scheme or '(none)'!r} is not allowed: only the run's own files"
    path = urllib.request.url2pathname(split.path)
    if not inside(path, root):
        return None, _shown(path, root), "outside the run's workflow files"
    return path, _shown(path, root), ""


class RunFetcher(DefaultFetcher):
    """Schema-salad fetcher confined to one directory; never touches the network."""

    def __init__(self, cache: Any, session: Any, *, root: Path, refusals: Refusals) -> None:
        super().__init__(cache, None)  # no HTTP session: nothing remote is ever fetched
        self.root = root
        self.refusals = refusals

    def fetch_text(self, url: str, content_types: list[str] | None = None) -> str:
        cached = self.cache.get(url)
        if isinstance(cached, str):  # cwltool's own bundled schemas, never client content
            return cached
        path, shown, reason = _local_reference(url, self.root)
        if path is None:
            self.refusals.add(shown, reason)
            raise ValidationException(f"reference {shown} refused: {reason}")
        if not os.path.isfile(path):
            raise ValidationException(f"{shown}: no such workflow file in the run")
        with open(path, encoding="utf-8") as fh:
            return fh.read()

    def check_exists(self, url: str) -> bool:
        if url in self.cache:
            return True
        path, shown, reason = _local_reference(url, self.root)
        if path is None:
            self.refusals.add(shown, reason)
            return False
        return os.path.exists(path)


def fetcher_constructor(root: Path, refusals: Refusals) -> Callable[[Any, Any], RunFetcher]:
    return functools.partial(RunFetcher, root=root, refusals=refusals)


def _no_resolver(_loader: Any, reference: str) -> str | None:
    """cwltool's default resolver looks names up on disk and in remote TRS: none of that."""
    return None


# ------------------------------------------------------------------ File/Directory references
def _file_objects(value: Any) -> Iterator[MutableMapping[str, Any]]:
    if isinstance(value, MutableMapping):
        if value.get("class") in _FILE_CLASSES:
            yield value
        for v in value.values():
            yield from _file_objects(v)
    elif isinstance(value, list):
        for v in value:
            yield from _file_objects(v)


def _processes(tool: Any) -> Iterator[Any]:
    yield tool
    for step in getattr(tool, "steps", None) or []:
        embedded = getattr(step, "embedded_tool", None)
        if embedded is not None:
            yield from _processes(embedded)


def check_document_files(tool: Any, root: Path, refusals: Refusals) -> None:
    """Every File/Directory in the loaded documents (defaults, nested secondaryFiles and
    listings) must be a file of the run: an attachment or TRS descriptor file."""
    for proc in _processes(tool):
        for obj in _file_objects(getattr(proc, "tool", None)):
            for key in ("location", "path"):
                ref = obj.get(key)
                if not isinstance(ref, str) or ref.startswith("_:"):
                    continue
                if ref.startswith("drs://"):
                    refusals.add(ref[:300], "DRS inputs are workflow_params, not document defaults")
                    continue
                url = ref if "://" in ref else Path(root, ref).as_uri()  # Path(root, "/x") is /x
                path, shown, reason = _local_reference(url, root)
                if path is None:
                    refusals.add(shown, reason)


def _relative_reference(ref: str) -> str | None:
    """The normalized relative path of ``ref``, or None if it is absolute or escapes."""
    if not ref or ref.startswith("/") or "\x00" in ref or "\\" in ref:
        return None
    norm = posixpath.normpath(ref)
    if norm == ".." or norm.startswith("../") or norm.startswith("/"):
        return None
    return norm


def _input_reference(ref: str, attachment_paths: set[str]) -> tuple[str | None, str]:
    """(attachment-relative path or "" for DRS/literals, or None if refused; reason)."""
    if ref.startswith("drs://") or ref.startswith("_:"):
        return "", ""
    split = urllib.parse.urlsplit(ref)
    if split.scheme == "file":
        # wes-client sends client-local file:// URLs of the files it attached
        path = urllib.parse.unquote(split.path).lstrip("/")
        for candidate in (path, posixpath.basename(path)):
            if candidate in attachment_paths:
                return candidate, ""
        return None, "a file:// reference must name an attached file"
    if split.scheme or "://" in ref:
        return None, f"scheme {split.scheme!r} is not allowed: inputs are drs:// objects or attached files"
    rel = _relative_reference(ref)
    if rel is None:
        return None, "absolute paths and '..' are not allowed: inputs are drs:// objects or attached files"
    return rel, ""


def check_input_references(params: Mapping[str, Any], attachment_paths: Iterable[str]) -> None:
    """Submission check of ``workflow_params``: every File/Directory (including nested
    secondaryFiles and listings) is a ``drs://`` object or an attached file."""
    attached = set(attachment_paths)
    refusals = Refusals()
    for obj in _file_objects(params):
        for key in ("location", "path"):
            ref = obj.get(key)
            if isinstance(ref, str):
                rel, reason = _input_reference(ref, attached)
                if rel is None:
                    refusals.add(ref[:300], reason)
    if refusals:
        raise BadRequest(refusals.message().replace("workflow reference", "input reference"))


def map_input_references(params: Any, att_dir: Path, refusals: Refusals) -> None:
    """Execution: point every attached-file reference at the run's materialized copy (never
    at the client's path); anything else than drs:// is refused."""
    attached = {p.relative_to(att_dir).as_posix() for p in att_dir.rglob("*") if p.is_file()}
    for obj in _file_objects(params):
        refs = [str(obj[k]) for k in ("location", "path") if isinstance(obj.get(k), str)]
        for ref in refs:
            rel, reason = _input_reference(ref, attached)
            if rel is None:
                refusals.add(ref[:300], reason)
            elif rel:
                target = att_dir / rel
                if not inside(target, att_dir):
                    refusals.add(ref[:300], "outside the run's files")
                    continue
                obj.pop("path", None)
                obj["location"] = target.as_uri()
                break


# ------------------------------------------------------------------ loading
def load_restricted(main: Path, root: Path, refusals: Refusals, make_tool: Callable[..., Any] | None = None) -> Any:
    """Load ``main`` with the restricted fetcher; raise BadRequest on any refused reference."""
    from cwltool.context import LoadingContext
    from cwltool.load_tool import load_tool
    from cwltool.workflow import default_make_tool

    options: dict[str, Any] = {
        "relax_path_checks": False,
        "fetcher_constructor": fetcher_constructor(root, refusals),
        "resolver": _no_resolver,
        "doc_cache": False,
        "construct_tool_object": make_tool or default_make_tool,
    }
    loading = LoadingContext(options)
    try:
        with load_lock:
            tool = load_tool(main.as_uri(), loading)
    except Exception:
        if refusals:
            raise BadRequest(refusals.message()) from None
        raise
    check_document_files(tool, root, refusals)
    if refusals:
        raise BadRequest(refusals.message())
    return tool


def check_workflow_documents(files: Iterable[tuple[str, bytes]], main: str, settings: Any) -> None:
    """Submission: materialize the run's documents in a private temporary directory and
    load them with the worker's restricted loader. Refused references are a 400 naming
    them; other load errors are left to the worker, which reports them in the run log."""
    from wes_server import jsbox

    jsbox.install(settings)  # cwltool validates expressions (jshint) while loading
    with tempfile.TemporaryDirectory(prefix="hg-wf-check-") as tmp:
        root = Path(tmp) / "attachments"
        root.mkdir(mode=0o700)
        for path, content in files:
            dest = root / path
            if not inside(dest, root):
                raise BadRequest(f"attachment path {path[:120]!r} escapes the run")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
        refusals = Refusals()
        try:
            load_restricted(root / main, root, refusals)
        except BadRequest:
            raise
        except Exception:  # invalid CWL and the like: the worker reports it with context
            if refusals:
                raise BadRequest(refusals.message()) from None


# ------------------------------------------------------------------ the engine's file system
class RunFsAccess(StdFsAccess):
    """cwltool's file system view confined to the run's working directory; files are read
    only when the run recorded their checksum, and only through a re-hashed handle."""

    def __init__(
        self,
        basedir: str,
        *,
        roots: tuple[Path, ...],
        checksum_of: Callable[[str], str | None],
        refusals: Refusals,
    ) -> None:
        super().__init__(basedir)
        self.roots = roots
        self.checksum_of = checksum_of
        self.refusals = refusals

    def _checked(self, fn: str) -> str:
        path = self._abs(fn)
        if "://" in path:  # http(s) stays a URL in cwltool's abspath
            self.refusals.add(fn[:300], "not a file of the run")
            raise WorkflowException(f"access refused: {fn[:300]} is not a file of the run")
        if not any(inside(path, r) for r in self.roots):
            self.refusals.add(fn[:300], "outside the run's files")
            raise WorkflowException(f"access refused: {fn[:300]} is outside the run's files")
        return path

    def glob(self, pattern: str) -> list[str]:
        self._checked(os.path.dirname(self._abs(pattern).split("*", 1)[0]) or self.basedir)
        found = super().glob(pattern)
        for uri in found:
            self._checked(uri)
        return found

    def open(self, fn: str, mode: str) -> IO[Any]:
        path = self._checked(fn)
        if any(c in mode for c in "wax+"):
            return open(path, mode)  # noqa: SIM115 - the caller closes it
        expected = self.checksum_of(path)
        if expected is None:
            self.refusals.add(fn[:300], "not a staged, verified file")
            raise WorkflowException(f"access refused: {fn[:300]} is not a staged, verified file of the run")
        fh = open(path, "rb")  # noqa: SIM115 - returned to the caller
        digest = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        if digest.hexdigest() != expected:
            fh.close()
            self.refusals.add(fn[:300], "content differs from its recorded checksum")
            raise WorkflowException(f"access refused: {fn[:300]} changed after it was verified")
        fh.seek(0)
        return fh if "b" in mode else io.TextIOWrapper(fh, encoding="utf-8")

    def exists(self, fn: str) -> bool:
        return os.path.exists(self._checked(fn))

    def size(self, fn: str) -> int:
        return os.stat(self._checked(fn)).st_size

    def isfile(self, fn: str) -> bool:
        return os.path.isfile(self._checked(fn))

    def isdir(self, fn: str) -> bool:
        return os.path.isdir(self._checked(fn))

    def listdir(self, fn: str) -> list[str]:
        path = self._checked(fn)
        return [abspath(urllib.parse.quote(entry), fn) for entry in os.listdir(path)]

    def realpath(self, path: str) -> str:
        return os.path.realpath(self._checked(path))


def fs_access_factory(
    roots: tuple[Path, ...], checksum_of: Callable[[str], str | None], refusals: Refusals
) -> Callable[[str], RunFsAccess]:
    return functools.partial(RunFsAccess, roots=roots, checksum_of=checksum_of, refusals=refusals)
