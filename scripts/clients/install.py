#!/usr/bin/env python3
"""Create (once) an isolated virtualenv for one real GA4GH client and print its path.

The conformance tests drive third-party clients whose pins conflict with HelixGate's own
dependencies (wes-service pins connexion 2, drs-compliance-suite pins old requests...), so
each one lives in its own virtualenv under a cache directory:

    python scripts/clients/install.py wes-service          # -> /tmp/helixgate-clients/wes-service
    python scripts/clients/install.py --list
    HELIXGATE_CLIENTS_DIR=/var/cache/hg python scripts/clients/install.py trs-cli

The environment is rebuilt when its requirement list or its fix-ups change (a stamp file
records both) and concurrent callers (parallel test sessions) serialise on a lock file. Packages
come from the configured package index only (pip's normal configuration); nothing is installed
by hand.

Dependencies a wheel imports without declaring (or declares without a needed upper bound) are
added to its requirement list in ``CLIENTS``, each with a comment saying why.

Fix-ups: some published wheels import modules they do not ship. ``FIXUPS`` maps a client to the
files written into its venv's site-packages after ``pip install`` (path relative to
site-packages -> exact content). Each entry is the smallest stand-in for what the wheel omits,
with the reason beside it; a fix-up never overwrites a file pip installed (that would mean the
upstream packaging changed and the fix-up must be revisited), so the install fails instead.

    drs-compliance-suite 1.0.3: compliance_suite/helper.py does
        ``from supported_drs_versions import SUPPORTED_DRS_VERSIONS``, a top-level module that
        lives at the root of the upstream repository but is not in the wheel. Written with the
        one version this release has schemas for (compliance_suite/schemas/v1.2.0).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

# name -> exact requirements. Pinned so a test run is reproducible; bump deliberately.
CLIENTS: dict[str, tuple[str, ...]] = {
    "wes-service": ("wes-service==5.0",),
    # drs-cli 0.2.3's wheel declares no dependencies at all; these are what it imports
    "drs-cli": ("drs-cli==0.2.3", "requests>=2.20,<3", "urllib3<3", "pydantic>=1.8,<2"),
    "ga4gh-drs-client": ("ga4gh-drs-client==0.1.7",),
    # trs-cli 0.7.0 imports pydantic.main.ModelMetaclass (pydantic 1) but does not cap pydantic
    "trs-cli": ("trs-cli==0.7.0", "pydantic>=1.8,<2"),
    # drs-compliance-suite 1.0.3 imports jsonschema without declaring it (pinned to the version of
    # upstream's requirements.txt: RefResolver-era); it pins Flask 2.2.0, which imports
    # werkzeug.urls.url_quote (gone in Werkzeug 3) but does not cap Werkzeug.
    "drs-compliance-suite": ("drs-compliance-suite==1.0.3", "jsonschema==4.12.1", "werkzeug>=2.2,<2.3"),
}
# name -> {path relative to site-packages: content}; see "Fix-ups" in the module docstring.
FIXUPS: dict[str, dict[str, str]] = {
    "drs-compliance-suite": {
        "supported_drs_versions.py": 'SUPPORTED_DRS_VERSIONS = ["1.2.0"]\n',
    },
}
STAMP = ".helixgate-client.json"


class ClientInstallError(RuntimeError):
    """pip could not build the client's environment; the message carries pip's own error."""


def clients_dir() -> Path:
    return Path(os.environ.get("HELIXGATE_CLIENTS_DIR") or Path(tempfile.gettempdir()) / "helixgate-clients")


def bin_path(env_dir: Path, executable: str) -> Path:
    return env_dir / "bin" / executable


def _stamp(name: str) -> dict[str, object]:
    stamp: dict[str, object] = {"client": name, "requirements": list(CLIENTS[name]), "python": sys.version.split()[0]}
    if FIXUPS.get(name):  # only then: clients without fix-ups keep their existing environments
        stamp["fixups"] = FIXUPS[name]
    return stamp


def _site_packages(env_dir: Path, timeout: float) -> Path:
    python = str(bin_path(env_dir, "python"))
    proc = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ClientInstallError(f"cannot locate site-packages of {env_dir}:\n{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip())


def _apply_fixups(name: str, env_dir: Path, timeout: float) -> None:
    fixups = FIXUPS.get(name, {})
    if not fixups:
        return
    site = _site_packages(env_dir, timeout).resolve()
    for rel, content in fixups.items():
        target = (site / rel).resolve()
        if not target.is_relative_to(site):
            raise ClientInstallError(f"fix-up path {rel!r} of {name} escapes site-packages")
        if target.exists():
            raise ClientInstallError(f"fix-up {rel!r} of {name} already exists after pip install: "
                                     "the upstream packaging changed, revisit FIXUPS")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def _is_current(env_dir: Path, name: str) -> bool:
    try:
        return bool(json.loads((env_dir / STAMP).read_text()) == _stamp(name))
    except (OSError, ValueError):
        return False


def ensure(name: str, *, root: Path | None = None, timeout: float = 900) -> Path:
    """Return the virtualenv of client ``name``, creating or rebuilding it if needed."""
    if name not in CLIENTS:
        raise KeyError(f"unknown client {name!r}; known: {', '.join(sorted(CLIENTS))}")
    base = root or clients_dir()
    base.mkdir(parents=True, exist_ok=True)
    env_dir = base / name
    with open(base / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _is_current(env_dir, name):
            return env_dir
        shutil.rmtree(env_dir, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        cmd = [str(bin_path(env_dir, "python")), "-m", "pip", "install", "--quiet", *CLIENTS[name]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            shutil.rmtree(env_dir, ignore_errors=True)
            errors = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING: Location")]
            raise ClientInstallError(f"pip install {' '.join(CLIENTS[name])} failed:\n" + "\n".join(errors[-30:]))
        try:
            _apply_fixups(name, env_dir, timeout)
        except (ClientInstallError, OSError, subprocess.SubprocessError):
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        (env_dir / STAMP).write_text(json.dumps(_stamp(name)))
    return env_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("client", nargs="?", help="client name (see --list)")
    parser.add_argument("--root", type=Path, default=None, help="cache directory (default $HELIXGATE_CLIENTS_DIR "
                        "or /tmp/helixgate-clients)")
    parser.add_argument("--list", action="store_true", help="list the known clients and their requirements")
    args = parser.parse_args()
    if args.list or not args.client:
        for name, reqs in sorted(CLIENTS.items()):
            fixes = f" (+ fix-ups: {', '.join(FIXUPS[name])})" if FIXUPS.get(name) else ""
            print(f"{name}: {' '.join(reqs)}{fixes}")
        return 0
    try:
        print(ensure(args.client, root=args.root))
    except (KeyError, ClientInstallError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
