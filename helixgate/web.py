"""The HTTP layer shared by the three GA4GH services and the HelixGate core API.

One connexion app serves any subset of the APIs. Authentication, authorization and the
request audit happen in exactly one place: every operation handler is wrapped by
``_guard`` (applied by the resolver), which reads the permission the operation declares
in ``x-helixgate-permission`` and refuses the request unless the caller holds it. An
operation without a declaration makes the app refuse to start (default deny).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import ipaddress
import logging
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping
from urllib.parse import unquote_to_bytes, urlsplit

import connexion
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import MiddlewarePosition
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolution, Resolver
from flask import Response, g, jsonify, request
from starlette.exceptions import HTTPException as StarletteHTTPException

from helixgate import limits, rbac
from helixgate.body_pipe import BodyPipeMiddleware
from helixgate.errors import BadRequest, Forbidden, HelixGateError, Hidden, PayloadTooLarge, Unauthorized
from helixgate.services import ServiceDeclaration, ga4gh_error

if TYPE_CHECKING:
    from helixgate.platform import Platform

log = logging.getLogger("helixgate.web")

ROOT = Path(__file__).resolve().parents[1]
ON_BEHALF_HEADER = "X-HelixGate-On-Behalf-Of"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def openapi_dir() -> Path:
    for candidate in (ROOT / "openapi", Path(__import__("sys").prefix) / "share" / "helixgate" / "openapi"):
        if (candidate / "core.yaml").exists():  # the core's own document
            return candidate
    raise FileNotFoundError("openapi/ directory not found (install from the source tree)")


# --------------------------------------------------------------------------- request context
@dataclass
class Caller:
    """Who is calling. ``username`` is None for anonymous callers."""

    username: str | None
    roles: tuple[str, ...] = ()
    on_behalf_of: str | None = None  # delegation: the user a service identity acts for
    delegate_roles: tuple[str, ...] = ()

    @property
    def effective_user(self) -> str | None:
        """The user whose access rights apply (the delegating user, if any)."""
        return self.on_behalf_of or self.username

    @property
    def effective_roles(self) -> tuple[str, ...]:
        return self.delegate_roles if self.on_behalf_of else self.roles

    def can(self, permission: str) -> bool:
        return rbac.allows(self.effective_roles, permission)

    @property
    def display(self) -> str:
        return self.username or "anonymous"


@dataclass
class RequestState:
    service: str
    operation_id: str
    request_id: str
    client_addr: str | None
    caller: Caller = field(default_factory=lambda: Caller(None))
    target: str | None = None


_state: contextvars.ContextVar[RequestState | None] = contextvars.ContextVar("helixgate_request", default=None)


def current() -> RequestState:
    st = _state.get()
    if st is None:
        raise RuntimeError("no HelixGate request in progress")
    return st


def current_or_none() -> RequestState | None:
    return _state.get()


def caller() -> Caller:
    return current().caller


def platform() -> Platform:
    """The Platform serving the current request."""
    from flask import current_app

    get_platform: Callable[[], Platform] = current_app.config["HELIXGATE_PLATFORM"]
    return get_platform()


def audit_change(
    action: str, target: str | None, *, outcome: str = "success", details: Mapping[str, Any] | None = None
) -> None:
    """Record a domain change (create/modify/delete) made by the current caller."""
    st = current()
    platform().audit.record(
        category="change",
        action=action,
        outcome=outcome,
        actor=st.caller.username,
        on_behalf_of=st.caller.on_behalf_of,
        service=st.service,
        target=target,
        request_id=st.request_id,
        client_addr=st.client_addr,
        details=dict(details or {}),
    )


def security_event(
    action: str, *, target: str | None = None, severity: int = 8, details: Mapping[str, Any] | None = None
) -> None:
    """Record a security event (integrity failure, refused access) for the current request."""
    st = current()
    platform().audit.security_event(
        action,
        actor=st.caller.username,
        on_behalf_of=st.caller.on_behalf_of,
        service=st.service,
        target=target,
        request_id=st.request_id,
        client_addr=st.client_addr,
        severity=severity,
        details={"operation": st.operation_id, **dict(details or {})},
    )


def set_target(target: str) -> None:
    st = _state.get()
    if st is not None:
        st.target = target


# --------------------------------------------------------------------------- errors
ErrorBody = Callable[[int, str], dict[str, Any]]


def _flask_error(error_body: ErrorBody, exc: HelixGateError, request_id: str) -> Response:
    resp = jsonify(error_body(exc.status, exc.message))
    resp.status_code = exc.status
    resp.headers["X-Request-ID"] = request_id
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="helixgate"'
    return resp


# --------------------------------------------------------------------------- the guard
class _SessionSeen:
    """Remembers recently seen token ids to audit 'token accepted for a new session' once."""

    def __init__(self, size: int = 10000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


def _bearer_token(declaration: ServiceDeclaration[Any]) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'")
        return token.strip()
    if declaration.passports_in_body and request.method == "POST":
        # DRS PassportAuth lives in the body (x-in: body); accept a passport JWT there.
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            passports = body.get("passports")
            if isinstance(passports, list) and passports and isinstance(passports[0], str):
                return passports[0]
    return None


def authenticate(platform: Platform, declaration: ServiceDeclaration[Any]) -> Caller:
    """Turn the request's bearer token into a registered, active Caller (or anonymous)."""
    service = declaration.name
    token = _bearer_token(declaration)
    if token is None:
        return Caller(None)
    principal = platform.verifier.verify(token)
    # a verified identity is named in the audit even when registration or delegation checks refuse it
    current().caller = Caller(principal.username)
    user = platform.users.get(principal.username)
    if user is None:
        raise Forbidden(f"user {principal.username} is not registered in HelixGate")
    if not user.active:
        raise Forbidden(f"user {principal.username} is not active")
    c = Caller(principal.username, user.roles)
    behalf = request.headers.get(ON_BEHALF_HEADER)
    if behalf:
        # only the configured service identity delegates (admins never act as someone else)
        if principal.username != platform.settings.service_user or not rbac.allows(user.roles, "drs:delegate"):
            raise Forbidden(f"{principal.username} may not act on behalf of another user")
        delegate = platform.users.get(behalf)
        if delegate is None or not delegate.active:
            raise Forbidden(f"user {behalf} is not registered or not active")
        c.on_behalf_of = delegate.username
        c.delegate_roles = delegate.roles
    seen_key = f"{principal.issuer}|{principal.token_id or principal.subject}|{principal.expires_at}"
    if platform.session_seen.first_time(seen_key):
        platform.audit.security_event(
            "auth.session",
            outcome="success",
            severity=1,
            actor=principal.username,
            service=service,
            request_id=current().request_id,
            client_addr=current().client_addr,
            details={"issuer": principal.issuer},
        )
    return c


def _guard(
    func: Callable[..., Any],
    *,
    declaration: ServiceDeclaration[Any],
    operation_id: str,
    permission: str,
    get_platform: Callable[[], Platform],
) -> Callable[..., Any]:
    service, error_body = declaration.name, declaration.error_body
    anonymous_ok = permission in rbac.ANONYMOUS_CAPABLE

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        platform = get_platform()
        rid = request.headers.get("X-Request-ID", "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        state = RequestState(service, operation_id, rid, request.remote_addr)
        token = _state.set(state)
        g.request_id = rid
        outcome, status, message = "success", 200, ""
        try:
            if permission != rbac.PUBLIC:
                state.caller = authenticate(platform, declaration)
                if state.caller.username is None:
                    if not anonymous_ok or (permission == "trs:read" and not platform.settings.anonymous_read):
                        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
                elif not rbac.allows(state.caller.roles, permission):
                    raise Forbidden(f"permission denied: {operation_id} needs {permission}")
            _check_parameters(kwargs)
            _check_form()
            result = func(*args, **kwargs)
            if isinstance(result, tuple) and len(result) >= 2 and isinstance(result[1], int):
                status = result[1]
            elif isinstance(result, Response):
                status = result.status_code
            return result
        except HelixGateError as exc:
            status, message = exc.status, exc.message
            outcome = "denied" if exc.status in (401, 403) or isinstance(exc, Hidden) else "failure"
            if exc.status in (401, 403) or (isinstance(exc, Hidden) and exc.audit_here):
                # a 404 that hides existence is a refused probe too: same record as a 403
                platform.audit.security_event(
                    "auth.failed" if exc.status == 401 else "auth.denied",
                    actor=state.caller.username,
                    on_behalf_of=state.caller.on_behalf_of,
                    service=service,
                    target=state.target or getattr(exc, "subject", None),
                    request_id=rid,
                    client_addr=state.client_addr,
                    details={
                        "operation": operation_id,
                        "reason": exc.internal_reason if isinstance(exc, Hidden) else exc.message,
                        "status": exc.status,
                        **({"hidden": True} if isinstance(exc, Hidden) else {}),
                    },
                )
            return _flask_error(error_body, exc, rid)
        except Exception:  # never a stack trace to the client
            log.exception("unhandled error in %s (request %s)", operation_id, rid)
            outcome, status, message = "error", 500, "internal server error"
            return _flask_error(error_body, HelixGateError(f"internal server error (request id {rid})"), rid)
        finally:
            try:
                platform.audit.record(
                    category="request",
                    action=f"{service}.{operation_id}",
                    outcome=outcome,
                    actor=state.caller.username,
                    on_behalf_of=state.caller.on_behalf_of,
                    service=service,
                    target=state.target,
                    request_id=rid,
                    client_addr=state.client_addr,
                    details={
                        "status": status,
                        "method": request.method,
                        "path": request.path[:512],
                        "error": message[:300],
                    },
                )
            except Exception:  # pragma: no cover - audit store down: the request already ran
                log.exception("audit write failed for request %s", rid)
            _state.reset(token)

    return wrapper


def _check_parameters(kwargs: Mapping[str, Any]) -> None:
    """Path and query parameters as connexion converted them: bounded integers, valid strings."""
    for name, value in kwargs.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                continue
            if isinstance(item, int):
                limits.bounded_int(item, f"parameter {name}")
            elif isinstance(item, str):
                limits.check_text(item, f"parameter {name}")


def _check_form() -> None:
    """Form fields (WES ``POST /runs``) obey the same string rules as JSON strings."""
    if request.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return
    try:
        fields = list(request.form.items(multi=True))
        names = [f.filename or "" for f in request.files.values()]
    except ValueError as exc:  # werkzeug: malformed multipart
        raise BadRequest(f"malformed form body: {str(exc)[:200]}") from None
    for name, value in fields:
        limits.check_text(name, "a form field name")
        limits.check_text(value, f"form field {name[:64]}")
    for filename in names:
        limits.check_text(filename, "an attachment file name")


class GuardedResolver(Resolver):
    """Resolves operationIds to ``<module>.<snake_case(operationId)>`` and wraps each in the guard."""

    def __init__(
        self,
        declaration: ServiceDeclaration[Any],
        get_platform: Callable[[], Platform],
        streaming_routes: set[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.declaration = declaration
        self.service = declaration.name
        self.get_platform = get_platform
        self.streaming_routes = streaming_routes if streaming_routes is not None else set()
        self.module = importlib.import_module(declaration.handlers)

    def resolve(self, operation: Any) -> Resolution:
        op_id = operation.operation_id
        spec = operation._operation  # the raw operation object from the document
        permission = spec.get("x-helixgate-permission")
        if permission not in rbac.PERMISSIONS:
            raise RuntimeError(
                f"{self.service}: operation {op_id} declares no valid x-helixgate-permission ({permission!r})"
            )
        if spec.get("x-helixgate-streaming-body"):
            if "{" in operation.path:
                raise RuntimeError(f"{self.service}: streaming-body operation {op_id} must have a fixed path")
            self.streaming_routes.add((operation.method.upper(), self.declaration.base_path + operation.path))
        name = snake_case(op_id)
        func = getattr(self.module, name, None)
        if func is None:
            raise RuntimeError(f"{self.service}: no handler {self.declaration.handlers}.{name} for {op_id}")
        return Resolution(
            _guard(
                func,
                declaration=self.declaration,
                operation_id=op_id,
                permission=permission,
                get_platform=self.get_platform,
            ),
            op_id,
        )


def snake_case(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return s.lower()


# --------------------------------------------------------------------------- connexion-level errors
def _connexion_error_handler(
    get_platform: Callable[[], Platform],
) -> Callable[[ConnexionRequest, Exception], ConnexionResponse]:
    """Errors raised before a handler, in the error shape of the API the path belongs to,
    mounted here or not (the core's shape outside every declared API)."""

    def handler(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        path = request.url.path
        owner = next((s for s in get_platform().services if path.startswith(s.base_path)), None)
        return _connexion_error(owner.error_body if owner else ga4gh_error, request, exc)

    return handler


def _connexion_error(error_body: ErrorBody, request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    path = request.url.path
    if isinstance(exc, ProblemException):
        status, message = exc.status, str(exc.detail or exc.title or "bad request")
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        message = {404: f"not found: {path[:200]}", 405: f"method {request.method} not allowed on {path[:200]}"}.get(
            status, str(exc.detail)
        )
    elif isinstance(exc, HelixGateError):
        status, message = exc.status, exc.message
    elif isinstance(exc, RecursionError):  # safety net: the input limits refuse deep JSON first
        status, message = 400, "request nested too deeply"
    elif isinstance(exc, UnicodeDecodeError):  # connexion decodes JSON bodies before the handler
        status, message = 400, "request body is not valid UTF-8 JSON"
    elif type(exc).__name__ == "MultiPartException":  # starlette's multipart parser
        status, message = 400, f"malformed multipart body: {exc}"
    elif isinstance(exc, KeyError) and exc.args == ("Content-Type",):
        # starlette's form parser on an empty POST without Content-Type (e.g. WES POST /runs)
        status, message = 400, "request has no Content-Type header (expected multipart/form-data)"
    else:
        log.error("unhandled error before the handler on %s: %r", path, exc)
        status, message = 500, "internal server error"
    if status >= 500 and not isinstance(exc, HelixGateError):
        message = "internal server error"
    import json

    return ConnexionResponse(
        status_code=status,
        body=json.dumps(error_body(status, _clean(message))),
        content_type="application/json",
    )


def _clean(message: str) -> str:
    # connexion validation messages can quote whole request bodies: keep them short
    return message.replace("\n", " ")[:500]


# --------------------------------------------------------------------------- body sanity
_CONTROL_IN_PATH = re.compile("[\x00-\x1f\x7f]")


class BodySanityMiddleware:
    """Refuse bodies connexion cannot parse (no Content-Type, multipart without boundary)
    with a 400 before validation, instead of letting the parser fail with a 500."""

    def __init__(self, app: Any, max_body: Callable[[], int] = lambda: 32 * 1024**2) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and _CONTROL_IN_PATH.search(scope.get("path", "")):
            # a decoded CR/LF/NUL in a path parameter escapes connexion's routing (500 otherwise)
            raise BadRequest("request path contains control characters")
        if scope.get("type") == "http":
            _check_target(scope)
        if scope.get("type") == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
            ctype = headers.get("content-type", "")
            if has_body and not ctype:
                raise BadRequest("request has a body but no Content-Type header")
            if ctype.lower().startswith("multipart/") and "boundary=" not in ctype.lower():
                raise BadRequest("multipart Content-Type without a boundary")
            # connexion parses JSON/form bodies whole before the handler: bound them up front
            length = headers.get("content-length", "")
            parsed = ctype.lower().startswith(("application/json", "multipart/", "application/x-www-form"))
            if parsed and length.isdigit() and int(length) > self.max_body():
                raise PayloadTooLarge(f"request body larger than {self.max_body()} bytes")
            if parsed and not length.isdigit():
                receive = _bounded_receive(receive, self.max_body())  # chunked: count while streaming
            if _is_json(ctype) and has_body:
                receive = await _checked_json_body(receive)
        await self.app(scope, receive, send)


def _is_json(ctype: str) -> bool:
    media = ctype.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _check_target(scope: Any) -> None:
    """Path and query must percent-decode to valid UTF-8 without NUL (lone surrogates cannot
    be spelled in valid UTF-8; the servers' lenient decoding would otherwise smuggle U+FFFD)."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogatepass")
    for what, raw in (("request path", raw_path), ("query string", scope.get("query_string", b""))):
        if not raw:
            continue
        text = raw.decode("latin-1")
        if what == "query string":
            text = text.replace("+", " ")
        try:
            decoded = unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{what} is not valid percent-encoded UTF-8") from None
        limits.check_text(decoded, what)


async def _checked_json_body(receive: Callable[[], Any]) -> Callable[[], Any]:
    """Read a (size-bounded) JSON body whole, check it against the input limits, replay it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if body.strip():
        limits.loads(body, "request body")
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _bounded_receive(receive: Callable[[], Any], limit: int) -> Callable[[], Any]:
    """An ASGI ``receive`` that raises PayloadTooLarge once more than ``limit`` body bytes arrived."""
    seen = 0

    async def bounded() -> Any:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"request body larger than {limit} bytes")
        return message

    return bounded


# --------------------------------------------------------------------------- proxies and public URL
class PublicOriginMiddleware:
    """Outermost: who the client is and what URL the service has are configuration, not headers.

    ``X-Forwarded-For`` is believed only when the TCP peer is one of ``trusted_proxies`` (the
    rightmost address that is not itself a trusted proxy becomes the client). The scheme and
    ``Host`` every absolute URL is built from (redirects included) are those of ``public_url``.
    """

    def __init__(self, app: Any, settings: Callable[[], Any]) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            s = self.settings()
            scope = dict(scope)
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"host"]
            client = scope.get("client")
            proxies = _networks(tuple(s.trusted_proxies))
            forwarded = [v for k, v in headers if k.lower() == b"x-forwarded-for"]
            if client and forwarded and _in(client[0], proxies):
                real = _client_from_forwarded(b",".join(forwarded).decode("latin-1"), proxies)
                if real:
                    scope["client"] = (real, 0)
            public = urlsplit(s.effective_public_url)
            scheme = public.scheme or "http"
            if scope["type"] == "websocket":
                scheme = "wss" if scheme == "https" else "ws"
            scope["scheme"] = scheme
            headers.append((b"host", public.netloc.encode("ascii", "replace")))
            scope["headers"] = headers
        await self.app(scope, receive, send)


@functools.lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _in(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def _client_from_forwarded(value: str, proxies: tuple[Any, ...]) -> str | None:
    hops = [h.strip() for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return None  # garbage in the chain: keep the proxy's own address
        if not _in(hop, proxies):
            return hop
    return hops[0] if hops else None


# --------------------------------------------------------------------------- OpenAPI documents
def _add_spec_routes(
    app: connexion.FlaskApp, services: Iterable[ServiceDeclaration[Any]], get_platform: Callable[[], Platform]
) -> None:
    """Serve each API's document as written (``$ref`` kept: DRS's schemas are recursive, so the
    resolved form connexion would serve cannot be encoded), with ``servers`` set to the public URL."""
    import yaml

    for declaration in services:
        service = declaration.name
        raw = yaml.safe_load((openapi_dir() / declaration.openapi).read_text(encoding="utf-8"))
        base = declaration.base_path

        def document(raw: dict[str, Any] = raw, base: str = base) -> dict[str, Any]:
            doc = dict(raw)
            doc["servers"] = [{"url": get_platform().settings.effective_public_url + base}]
            return doc

        def as_json(document: Callable[[], dict[str, Any]] = document) -> Response:
            import json

            return Response(json.dumps(document(), default=str), mimetype="application/json")

        def as_yaml(document: Callable[[], dict[str, Any]] = document) -> Response:
            return Response(yaml.safe_dump(document(), sort_keys=False), mimetype="application/yaml")

        app.app.add_url_rule(f"{base}/openapi.json", f"openapi_json_{service}", as_json, methods=["GET"])
        app.app.add_url_rule(f"{base}/openapi.yaml", f"openapi_yaml_{service}", as_yaml, methods=["GET"])


# --------------------------------------------------------------------------- app factory
def create_app(
    get_platform: Callable[[], Platform],
    services: Iterable[ServiceDeclaration[Any]],
    *,
    extra_routes: Callable[[Any], None] | None = None,
) -> connexion.FlaskApp:
    """One connexion app serving the APIs of ``services`` (their declarations)."""
    services = tuple(services)
    middlewares = [m for m in ConnexionMiddleware.default_middlewares if m is not SecurityMiddleware]
    app = connexion.FlaskApp(
        __name__,
        specification_dir=str(openapi_dir()),
        middlewares=middlewares,
    )
    app.app.config["MAX_CONTENT_LENGTH"] = None
    app.app.config["HELIXGATE_PLATFORM"] = get_platform
    app.add_middleware(
        PublicOriginMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION, settings=lambda: get_platform().settings
    )
    app.add_middleware(
        BodySanityMiddleware,
        position=MiddlewarePosition.BEFORE_VALIDATION,
        max_body=lambda: get_platform().settings.max_json_bytes,
    )
    streaming_routes: set[tuple[str, str]] = set()  # filled by the resolvers below
    app.add_middleware(BodyPipeMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION, routes=streaming_routes)
    for declaration in services:
        app.add_api(
            declaration.openapi,
            base_path=declaration.base_path,
            resolver=GuardedResolver(declaration, get_platform, streaming_routes),
            validate_responses=False,
            strict_validation=False,
            swagger_ui_options=SwaggerUIOptions(swagger_ui=False, serve_spec=False),
        )
    for exc_type in (ProblemException, StarletteHTTPException, HelixGateError, Exception):
        app.add_error_handler(exc_type, _connexion_error_handler(get_platform))

    inner_wsgi = app.app.wsgi_app

    def _terminated_input(environ: dict[str, Any], start_response: Any) -> Any:
        # The ASGI server terminates request bodies; telling werkzeug so makes chunked
        # bodies (no Content-Length) readable through request.stream/request.form.
        environ["wsgi.input_terminated"] = True
        return inner_wsgi(environ, start_response)

    app.app.wsgi_app = _terminated_input

    @app.app.after_request
    def _request_id(resp: Response) -> Response:
        rid = getattr(g, "request_id", None)
        if rid:
            resp.headers.setdefault("X-Request-ID", rid)
        return resp

    _add_spec_routes(app, services, get_platform)
    if extra_routes:
        extra_routes(app)
    return app


def json_body(required: bool = True) -> Mapping[str, Any]:
    """The request body as a JSON object, or BadRequest."""
    data = request.get_json(silent=True)
    if data is None:
        if required:
            raise BadRequest("request body must be a JSON object (Content-Type: application/json)")
        return {}
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data
