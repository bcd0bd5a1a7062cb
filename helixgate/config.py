"""One typed configuration object per process.

Sources, later ones winning: defaults, a TOML file (``--config`` or ``HELIXGATE_CONFIG``),
``HELIXGATE_<NAME>`` environment variables. Invalid values fail at start with a message
naming the setting. Settings are flat on purpose: every one maps to exactly one
environment variable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from helixgate.errors import ConfigurationError

ENV_PREFIX = "HELIXGATE_"


@dataclass(frozen=True)
class IssuerConfig:
    """An OIDC issuer we accept tokens from."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwks_uri: str | None = None  # None: discovered from <issuer>/.well-known/openid-configuration
    username_claim: str = "sub"


ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "helixgate"


@dataclass(frozen=True)
class Settings:
    # -- where things live
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""  # "" -> sqlite file in data_dir
    # -- serving
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # "" -> http(s)://host:port; used for drs:// ids and signed URLs
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca_bundle: str = ""  # CA bundle used to verify inter-service HTTPS calls
    trusted_proxies: tuple[str, ...] = ()  # IPs/CIDRs whose X-Forwarded-For is believed; () -> none
    # -- peer services (WES calls DRS and TRS over HTTP); "" -> this process's public_url
    drs_url: str = ""
    trs_url: str = ""
    # -- authentication
    builtin_issuer: bool = True
    builtin_issuer_url: str = ""  # "" -> <public_url>/oidc; set one value for all processes of a split deployment
    audience: str = "helixgate"
    issuers: tuple[IssuerConfig, ...] = ()
    token_max_lifetime: int = 3600  # seconds; tokens living longer are refused
    clock_skew: int = 30
    jwks_cache_seconds: int = 300
    service_user: str = "helixgate-wes"  # identity WES uses to read data on a user's behalf
    service_token_file: str = ""  # token of the service identity when an external IdP issues it
    service_credential_file: str = ""  # a worker's service credential (0600), exchanged at the core's token endpoint
    bootstrap_admin: str = "admin"  # registered, active admin created once, at the first start ("" to disable)
    # -- interactive login at the built-in issuer (helixgate.login) and the web UI
    access_token_ttl: int = 300  # seconds; access tokens from the authorize/refresh/device grants
    refresh_token_lifetime: int = 43200  # seconds from the login; rotation never extends it
    login_max_failures: int = 5  # failed logins per username (x4 per address) within login_throttle_seconds
    login_throttle_seconds: int = 300
    ui_enabled: bool = True  # serve the web dashboard at <public_url>/ui/ (with the core API)
    ui_oidc_issuer: str = ""  # "" -> the built-in issuer; else an external OIDC provider (discovery)
    ui_client_id: str = "helixgate-ui"
    # more public clients of the built-in issuer (PKCE S256 only), as JSON:
    # [{"client_id": "...", "redirect_uris": ["https://other.example/ui/callback"]}]
    oidc_clients: str = ""
    # -- data store
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_sse: Literal["AES256", "aws:kms"] = "AES256"
    s3_kms_key_id: str = ""
    max_upload_bytes: int = 64 * 1024**3
    drs_bulk_limit: int = 100
    drs_hide_existence: bool = False  # True: 404 instead of 403 for objects the caller may not read
    signed_url_ttl: int = 300
    # -- outbound fetches (workflow_url, s3 registration): SSRF guard
    allow_private_addresses: bool = False
    outbound_allow_list: tuple[str, ...] = ()
    # -- tool registry
    signer: Literal["key", "sigstore"] = "key"
    sigstore_trust_config: str = ""  # ClientTrustConfig JSON; "" -> public-good instance
    sigstore_identity: str = ""
    sigstore_oidc_issuer: str = ""
    sigstore_token_file: str = ""  # OIDC token (aud "sigstore") for keyless signing; "" -> built-in issuer
    registry_insecure_hosts: tuple[str, ...] = ("127.0.0.1:5000", "localhost:5000")
    anonymous_read: bool = True  # TRS read API open to anonymous callers
    # -- workflow execution
    queue_backend: Literal["sql", "sqs"] = "sql"
    sqs_queue_url: str = ""
    sqs_endpoint_url: str = ""
    lease_seconds: int = 60
    max_attempts: int = 2
    max_attachment_bytes: int = 16 * 1024**2
    max_json_bytes: int = 32 * 1024**2  # JSON and multipart request bodies (uploads stream separately)
    task_time_limit: int = 3600
    task_log_cap_bytes: int = 1024**2
    allow_task_network: bool = False
    # CWL expressions run in a sandboxed node (bubblewrap): per-evaluation limits
    expression_time_limit: int = 20  # seconds of wall-clock time per evaluation
    expression_memory_mib: int = 256  # JavaScript heap of the sandboxed node
    container_scope: str = ""  # Docker label scope of task containers; "" -> hg-<installation id> of the database
    # -- audit
    audit_retention_days: int = 270

    # ---------------------------------------------------------------- derived
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'helixgate.db'}"

    @property
    def effective_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def drs_host(self) -> str:
        """Host part used in drs:// URIs."""
        from urllib.parse import urlsplit

        return urlsplit(self.effective_drs_url).netloc

    @property
    def effective_drs_url(self) -> str:
        return (self.drs_url or self.effective_public_url).rstrip("/")

    @property
    def effective_trs_url(self) -> str:
        return (self.trs_url or self.effective_public_url).rstrip("/")

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------ loading
def _coerce(name: str, tp: Any, raw: Any) -> Any:
    env_name = ENV_PREFIX + name.upper()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    try:
        if tp is Path:
            return Path(str(raw)).expanduser()
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in {"1", "true", "yes", "on"}:
                return True
            if s in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true/false")
        if tp is int:
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if tp is str:
            if not isinstance(raw, (str, int, float)):
                raise ValueError("expected a string")
            return str(raw)
        if origin is Literal:
            if raw not in args:
                raise ValueError(f"expected one of {', '.join(map(str, args))}")
            return raw
        if origin is tuple and args and args[0] is IssuerConfig:
            items = json.loads(raw) if isinstance(raw, str) else raw
            return tuple(_issuer(i) for i in items)
        if origin is tuple:
            if isinstance(raw, str):
                return tuple(p.strip() for p in raw.split(",") if p.strip())
            return tuple(str(x) for x in raw)
    except (ValueError, TypeError, json.JSONDecodeError, KeyError) as exc:
        raise ConfigurationError(f"invalid setting {name} ({env_name}): {exc}; got {str(raw)[:60]!r}") from None
    raise ConfigurationError(f"unsupported setting type for {name}")


def _issuer(raw: Mapping[str, Any]) -> IssuerConfig:
    algs = tuple(raw.get("algorithms", ("RS256", "ES256")))
    bad = [a for a in algs if a not in ASYMMETRIC_ALGORITHMS]
    if bad:
        raise ValueError(f"issuer {raw.get('issuer')!r}: algorithms must be asymmetric, not {bad}")
    return IssuerConfig(
        issuer=str(raw["issuer"]).rstrip("/"),
        audience=str(raw["audience"]),
        algorithms=algs,
        jwks_uri=raw.get("jwks_uri"),
        username_claim=str(raw.get("username_claim", "sub")),
    )


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from defaults, a TOML file, environment and explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    hints = typing.get_type_hints(Settings)
    names = {f.name for f in dataclasses.fields(Settings)}
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read configuration file {config_file}: {exc}") from None
        unknown = sorted(set(doc) - names)
        if unknown:
            raise ConfigurationError(f"unknown setting(s) in {config_file}: {', '.join(unknown)}")
        values.update(doc)
    for name in names:
        key = ENV_PREFIX + name.upper()
        if key in env and env[key] != "":
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}")
    typed = {k: _coerce(k, hints[k], v) for k, v in values.items()}
    settings = Settings(**typed)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not (0 < s.port < 65536):
        raise ConfigurationError(f"invalid setting port ({ENV_PREFIX}PORT): {s.port} is not a TCP port")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigurationError("invalid setting tls_cert/tls_key: both or neither must be set")
    if s.storage_backend == "s3" and not s.s3_bucket:
        raise ConfigurationError(
            f"invalid setting s3_bucket ({ENV_PREFIX}S3_BUCKET): required when storage_backend is s3"
        )
    if s.queue_backend == "sqs" and not s.sqs_queue_url:
        raise ConfigurationError(
            f"invalid setting sqs_queue_url ({ENV_PREFIX}SQS_QUEUE_URL): required when queue_backend is sqs"
        )
    if s.s3_sse == "aws:kms" and s.storage_backend == "s3" and not s.s3_kms_key_id:
        raise ConfigurationError(f"invalid setting s3_kms_key_id ({ENV_PREFIX}S3_KMS_KEY_ID): required for aws:kms")
    for name in (
        "access_token_ttl",
        "refresh_token_lifetime",
        "login_max_failures",
        "login_throttle_seconds",
        "token_max_lifetime",
        "lease_seconds",
        "max_upload_bytes",
        "drs_bulk_limit",
        "signed_url_ttl",
    ):
        if getattr(s, name) <= 0:
            raise ConfigurationError(f"invalid setting {name} ({ENV_PREFIX}{name.upper()}): must be positive")
    import ipaddress

    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"invalid setting trusted_proxies ({ENV_PREFIX}TRUSTED_PROXIES): {proxy[:60]!r} is not an IP address "
                "or CIDR network"
            ) from None
    if s.oidc_clients:
        from helixgate.login import parse_extra_clients

        try:
            parse_extra_clients(s.oidc_clients)
        except ValueError as exc:
            raise ConfigurationError(f"invalid setting oidc_clients ({ENV_PREFIX}OIDC_CLIENTS): {exc}") from None
    if not s.builtin_issuer and not s.issuers:
        raise ConfigurationError("invalid setting issuers: no token issuer configured and builtin_issuer is off")
