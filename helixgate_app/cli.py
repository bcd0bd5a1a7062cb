"""The ``helixgate`` command line.

Local commands (``serve``, ``worker``, ``token issue``, ``audit verify``) use the
configuration and data directory of this machine. Everything else talks to the services
over HTTP with a bearer token (``--token`` / ``HELIXGATE_TOKEN``). Output is
human-readable by default and JSON with ``--json``; errors are one line on stderr and a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from helixgate.errors import HelixGateError
from helixgate_app.cli_common import Handler, api, emit, load, table

EXIT_ERROR = 1
EXIT_USAGE = 2

# --------------------------------------------------------------------------- serve / worker
SERVER_OPTIONS = ("host", "port", "tls_cert", "tls_key", "database_url")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The options that decide a server's address, identity and database (serve, token issue)."""
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--database-url")


def server_settings(args: argparse.Namespace) -> Any:
    """Settings exactly as ``helixgate serve`` resolves them: defaults, settings file, environment,
    then the server options. ``token issue`` uses the same, so both name the same issuer URL,
    data directory and database."""
    overrides: dict[str, Any] = {}
    for name in SERVER_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load(args, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from helixgate_app.runtime import serve

    return serve(server_settings(args), args.service, workers=args.workers)


# --------------------------------------------------------------------------- tokens
def _require_active_user(settings: Any, username: str) -> None:
    """Read the server's users table: tokens are only for registered, active users."""
    from sqlalchemy.exc import SQLAlchemyError

    from helixgate.db import Database
    from helixgate.users import UserDirectory

    db = Database(settings.effective_database_url)
    if db.sqlite_path is not None and not db.sqlite_path.is_file():
        raise HelixGateError(f"no database at {db.sqlite_path}: start `helixgate serve` with this data directory first")
    try:
        user = UserDirectory(db).get(username)
    except SQLAlchemyError as exc:
        raise HelixGateError(f"cannot read the users of {settings.data_dir}'s database: {type(exc).__name__}") from None
    finally:
        db.dispose()
    if user is None:
        raise HelixGateError(f"unknown user {username!r}: register it first (helixgate users add)")
    if not user.active:
        raise HelixGateError(f"user {username!r} is inactive: activate it first (helixgate users activate)")


def cmd_token_issue(args: argparse.Namespace) -> int:
    from helixgate.auth import builtin_issuer_for
    from helixgate.issuer import parse_duration

    settings = server_settings(args)
    if not settings.builtin_issuer:
        raise HelixGateError("the built-in issuer is disabled: get tokens from your identity provider")
    ttl = parse_duration(args.ttl)
    issuer = builtin_issuer_for(settings, create_key=False)  # never key material of its own
    _ = issuer.key_id  # fails clearly when the server's key is not there, before reading the database
    served = issuer.served_urls()
    if served and issuer.issuer_url not in served:
        raise HelixGateError(
            f"these settings name the issuer {issuer.issuer_url}, but the server on {settings.data_dir} serves "
            f"{served[0]}: give token issue the settings file, environment and --host/--port/--tls-cert "
            "options you gave helixgate serve (or set builtin_issuer_url)"
        )
    _require_active_user(settings, args.user)
    token = issuer.issue(args.user, ttl)
    emit(args, {"access_token": token, "token_type": "Bearer", "expires_in": ttl}, lambda d: d["access_token"])
    return 0


# --------------------------------------------------------------------------- login
def cmd_login(args: argparse.Namespace) -> int:
    """Device authorization grant at ``--issuer`` (default: the server's built-in issuer)."""
    from helixgate.oidc_client import TokenCache, device_login, discover

    verify: bool | str = args.ca_bundle or True
    issuer = args.issuer or args.url.rstrip("/") + "/oidc"
    entry = device_login(
        args.url,
        discover(issuer, verify=verify),
        client_id=args.client_id,
        cache=TokenCache(),
        tell=lambda line: print(line, file=sys.stderr, flush=True),
        verify=verify,
    )
    me = api(args).get_object("/helixgate/v1/me")
    emit(
        args,
        {"url": args.url, "username": me.get("username"), "issuer": entry["issuer"]},
        lambda d: f"logged in to {d['url']} as {d['username']}",
    )
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from helixgate.oidc_client import TokenCache, logout

    ended = logout(args.url, cache=TokenCache(), verify=args.ca_bundle or True)
    emit(
        args,
        {"url": args.url, "logged_out": ended},
        lambda d: f"logged out of {d['url']}" if d["logged_out"] else f"not logged in to {d['url']}",
    )
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    me = api(args).get_object("/helixgate/v1/me")
    emit(args, me, lambda d: f"{d.get('username')} ({', '.join(d.get('roles') or []) or 'no roles'})")
    return 0


# --------------------------------------------------------------------------- users (admin)
def cmd_users_set_password(args: argparse.Namespace) -> int:
    """Local: the password a user signs in with at the built-in issuer (read from stdin with
    --password-stdin, else asked twice on the terminal; never an argument: argv is visible)."""
    from helixgate.login import set_password_local, validate_password

    settings = server_settings(args)
    password: str | None
    if args.clear:
        password = None
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass(f"new password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            raise HelixGateError("the passwords differ")
    if password is not None:
        validate_password(password)
    set_password_local(settings, args.username, password)
    emit(
        args,
        {"username": args.username, "password": "removed" if password is None else "set"},
        lambda d: f"password {d['password']} for {d['username']}",
    )
    return 0


def _user_line(u: dict[str, Any]) -> str:
    return f"{u['username']}  {'active' if u['active'] else 'inactive'}  roles: {', '.join(u['roles']) or '-'}"


def cmd_users_list(args: argparse.Namespace) -> int:
    data = api(args).get_json("/helixgate/v1/users")
    emit(
        args,
        data,
        lambda d: table(
            [(u["username"], "yes" if u["active"] else "no", ",".join(u["roles"])) for u in d["users"]],
            ("USER", "ACTIVE", "ROLES"),
        ),
    )
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    body = {"username": args.username, "roles": args.role or [], "active": args.activate}
    emit(args, api(args).post_json("/helixgate/v1/users", body), _user_line)
    return 0


def _patch_user(args: argparse.Namespace, body: dict[str, Any]) -> int:
    resp = api(args).request("PATCH", f"/helixgate/v1/users/{args.username}", json=body)
    emit(args, resp.json(), _user_line)
    return 0


def cmd_users_activate(args: argparse.Namespace) -> int:
    return _patch_user(args, {"active": True})


def cmd_users_deactivate(args: argparse.Namespace) -> int:
    return _patch_user(args, {"active": False})


def cmd_users_roles(args: argparse.Namespace) -> int:
    return _patch_user(args, {"roles": args.role or []})


def cmd_users_token(args: argparse.Namespace) -> int:
    data = api(args).post_json("/helixgate/v1/tokens", {"username": args.username, "ttl": args.ttl})
    emit(args, data, lambda d: d["access_token"])
    return 0


def cmd_service_credential(args: argparse.Namespace) -> int:
    """Credentials of the service identity for split workers (helixgate.service_credentials)."""
    from helixgate import service_credentials as sc

    settings = server_settings(args)
    if args.sub == "create":
        from helixgate.issuer import parse_duration

        ttl = parse_duration(args.expires_in) if args.expires_in else None
        info, secret = sc.create_local(settings, label=args.label, out=args.out, ttl_seconds=ttl)
        shown = {**info.to_dict(), **({"file": args.out} if args.out else {"credential": secret})}
        emit(args, shown, lambda d: f"credential {d['id']} written to {d['file']}" if args.out else d["credential"])
    elif args.sub == "revoke":
        emit(args, sc.revoke_local(settings, args.id).to_dict(), lambda d: f"credential {d['id']} revoked")
    else:
        rows = [c.to_dict() for c in sc.list_local(settings)]
        emit(
            args,
            {"credentials": rows},
            lambda d: "\n".join(
                f"{r['id']} {r['username']} {r['label']} {'revoked' if r['revoked_at'] else 'active'}"
                for r in d["credentials"]
            ),
        )
    return 0


# --------------------------------------------------------------------------- audit
def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.remote:
        report = api(args).get_json("/helixgate/v1/audit/verify")
        ok, problems = report["ok"], report["problems"]
    else:
        from helixgate.audit import AuditTrail
        from helixgate.db import Database

        settings = load(args)
        db = Database(settings.effective_database_url)
        from helixgate.audit import PUBLIC_KEY_FILENAME

        key_dir = settings.data_dir / "audit"
        # verification needs only the public key (written by the core API beside its key)
        rep = AuditTrail(db, key_dir, signer=not (key_dir / PUBLIC_KEY_FILENAME).exists()).verify()
        ok, problems = rep.ok, list(rep.problems)
        report = rep.to_dict()
        db.dispose()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif ok:
        print("audit trail verified: hash chain and signed checkpoints intact")
    else:
        print("audit trail verification FAILED:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    return 0 if ok else EXIT_ERROR


def cmd_audit_purge(args: argparse.Namespace) -> int:
    """Retention: export records older than the retention period, then delete them (local)."""
    from helixgate.audit import AuditTrail, retention_cutoff
    from helixgate.db import Database

    settings = load(args)
    days = args.days if args.days is not None else settings.audit_retention_days
    db = Database(settings.effective_database_url)
    try:
        purged = AuditTrail(db, settings.data_dir / "audit").purge(
            older_than=retention_cutoff(days), export_path=Path(args.export)
        )
    finally:
        db.dispose()
    emit(
        args,
        {"purged": purged, "export": args.export, "retention_days": days},
        lambda d: f"purged {d['purged']} records older than {days} days (exported to {d['export']})",
    )
    return 0


def cmd_audit_query(args: argparse.Namespace) -> int:
    params = {
        k: v
        for k, v in {
            "category": args.category,
            "action": args.action,
            "actor": args.actor,
            "outcome": args.outcome,
            "target": args.target,
            "since": args.since,
            "until": args.until,
            "page_size": args.limit,
        }.items()
        if v
    }
    data = api(args).get_json("/helixgate/v1/audit/events", params=params)

    def human(d: dict[str, Any]) -> str:
        rows = [
            (
                e["seq"],
                e["time"],
                e["category"],
                e["action"],
                e["outcome"],
                e.get("actor") or "-",
                e.get("target") or "-",
            )
            for e in d["events"]
        ]
        return table(rows, ("SEQ", "TIME", "CATEGORY", "ACTION", "OUTCOME", "ACTOR", "TARGET"))

    emit(args, data, human)
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    if not args.cef:
        raise HelixGateError("only --cef export is supported")
    params = {k: v for k, v in {"since": args.since, "until": args.until}.items() if v}
    text = api(args).request("GET", "/helixgate/v1/audit/cef", params=params).text
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from helixgate_app.demo import run_demo

    return run_demo(keep=args.keep)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    def common_options(defaults: bool) -> argparse.ArgumentParser:
        """The global options. Subcommands repeat them so they work after the command too, but
        without defaults: a default there would overwrite a value given before the command."""
        c = argparse.ArgumentParser(add_help=False, argument_default=None if defaults else argparse.SUPPRESS)

        def d(value: Any) -> dict[str, Any]:
            return {"default": value} if defaults else {}

        c.add_argument("--config", help="TOML configuration file (or HELIXGATE_CONFIG)")
        c.add_argument("--data-dir", help="data directory (default ~/.local/share/helixgate)")
        c.add_argument("--url", **d(os.environ.get("HELIXGATE_URL", "http://127.0.0.1:8080")), help="base URL")
        c.add_argument("--token", help="bearer token (or HELIXGATE_TOKEN)")
        c.add_argument("--token-file", **d(os.environ.get("HELIXGATE_TOKEN_FILE")), help="file holding the token")
        c.add_argument("--ca-bundle", **d(os.environ.get("HELIXGATE_CA_BUNDLE")), help="CA bundle to verify HTTPS")
        c.add_argument("--json", action="store_true", **d(False), help="machine-readable output")
        return c

    common = common_options(defaults=True)
    sub_common = common_options(defaults=False)

    p = argparse.ArgumentParser(
        prog="helixgate", description="HelixGate: GA4GH WES/TRS/DRS with verified execution", parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, func: Handler, help_: str
    ) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_, parents=[sub_common])
        sp.set_defaults(func=func)
        return sp

    s = add(sub, "serve", cmd_serve, "serve the APIs (all on one address, or one service alone)")
    s.add_argument("service", nargs="?", default="all", choices=["all", "wes", "trs", "drs", "core", "worker"])
    add_server_options(s)
    s.add_argument(
        "--workers", type=int, default=2, help="worker threads (serve all / serve worker); 0 with serve all: API only"
    )

    lg = add(
        sub,
        "login",
        cmd_login,
        "sign in through a browser (device authorization grant); tokens are cached (0600) and refreshed",
    )
    lg.add_argument("--issuer", help="OIDC provider (default: the server's built-in issuer, <url>/oidc)")
    lg.add_argument("--client-id", default="helixgate-cli", help="client id at the provider (default helixgate-cli)")
    add(sub, "logout", cmd_logout, "revoke the cached login of --url and delete its tokens")
    add(sub, "whoami", cmd_whoami, "the user the CLI acts as, and their roles")

    tok = sub.add_parser("token", help="tokens from the built-in issuer").add_subparsers(dest="sub", required=True)
    t = add(
        tok,
        "issue",
        cmd_token_issue,
        "mint a token for a registered, active user with the server's key (local: the settings and "
        "server options of `helixgate serve`)",
    )
    t.add_argument("--user", required=True)
    t.add_argument("--ttl", default="15m")
    add_server_options(t)

    creds = sub.add_parser(
        "service-credential", help="credentials of the service identity for split workers (local)"
    ).add_subparsers(dest="sub", required=True)
    cc = add(creds, "create", cmd_service_credential, "create one: prints it once, or writes it to --out (0600)")
    cc.add_argument("--out", help="write the credential to this new file (mode 0600)")
    cc.add_argument("--label", default="", help="what this credential is for (shown by list)")
    cc.add_argument("--expires-in", help="lifetime, e.g. 90d (default: until revoked)")
    add_server_options(cc)
    cr = add(creds, "revoke", cmd_service_credential, "revoke a credential: its worker gets no more tokens")
    cr.add_argument("id")
    add_server_options(cr)
    add_server_options(add(creds, "list", cmd_service_credential, "list credentials (never their secrets)"))

    users = sub.add_parser("users", help="administrators: users, roles, activation, tokens").add_subparsers(
        dest="sub", required=True
    )
    add(users, "list", cmd_users_list, "list users")
    u = add(users, "add", cmd_users_add, "register a user")
    u.add_argument("username")
    u.add_argument("--role", action="append", help="role (repeatable)")
    u.add_argument("--activate", action="store_true")
    for name, func in (("activate", cmd_users_activate), ("deactivate", cmd_users_deactivate)):
        add(users, name, func, f"{name} a user").add_argument("username")
    r = add(users, "roles", cmd_users_roles, "replace a user's roles")
    r.add_argument("username")
    r.add_argument("--role", action="append")
    sp = add(
        users,
        "set-password",
        cmd_users_set_password,
        "set the password a user signs in with at the built-in issuer (local: the server's settings)",
    )
    sp.add_argument("username")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    sp.add_argument("--clear", action="store_true", help="remove the password (no interactive login)")
    add_server_options(sp)
    ut = add(users, "token", cmd_users_token, "mint a fresh token for yourself (the caller) through the server")
    ut.add_argument("username")
    ut.add_argument("--ttl", default="15m")

    audit = sub.add_parser("audit", help="auditors: query, verify, export").add_subparsers(dest="sub", required=True)
    v = add(audit, "verify", cmd_audit_verify, "verify the hash chain and checkpoints (local database by default)")
    v.add_argument("--remote", action="store_true", help="ask the server instead of reading the database")
    pg = add(audit, "purge", cmd_audit_purge, "export, then delete records past the retention period (local)")
    pg.add_argument("--export", required=True, help="JSON-lines file to export purged records to (must not exist)")
    pg.add_argument("--days", type=int, help="retention in days (default: audit_retention_days, 270)")
    q = add(audit, "query", cmd_audit_query, "query audit events")
    for f in ("category", "action", "actor", "outcome", "target", "since", "until"):
        q.add_argument(f"--{f}")
    q.add_argument("--limit", type=int, default=50)
    e = add(audit, "export", cmd_audit_export, "export security events")
    e.add_argument("--cef", action="store_true", help="Common Event Format lines")
    e.add_argument("--since")
    e.add_argument("--until")
    e.add_argument("--output", "-o")

    d = add(sub, "demo", cmd_demo, "run the end-to-end demo on embedded defaults (needs Docker)")
    d.add_argument("--keep", action="store_true", help="keep the temporary data directory")

    from helixgate_app import cli_groups

    cli_groups.register(sub, add)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HelixGateError as exc:
        print(f"helixgate: error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(
            f"helixgate: error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
