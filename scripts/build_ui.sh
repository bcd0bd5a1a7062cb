#!/usr/bin/env bash
# Vendor the web UI's third-party browser assets (htmx) from the npm registry.
#
#   scripts/build_ui.sh                    npm ci (exact versions + integrity of ui/package-lock.json)
#                                          into a temporary directory, copy the dist files into
#                                          helixgate_ui/static/vendor/ and record their SHA-256,
#                                          version and lockfile integrity in vendor/MANIFEST.json
#   scripts/build_ui.sh --check            verify the committed files: the manifest names the
#                                          lockfile's version and integrity, each file has the
#                                          recorded SHA-256, and a fresh npm ci gives the same bytes
#   scripts/build_ui.sh --check --offline  the same without the registry (the unit tests run this)
#
# The committed files are what the wheel ships: building the package needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0 offline=0
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    --offline) offline=1 ;;
    *) echo "usage: $0 [--check [--offline]]" >&2; exit 2 ;;
  esac
done
vendor=helixgate_ui/static/vendor
py=${PYTHON:-python3}
# name in node_modules -> dist file -> vendored file name
assets=("htmx.org dist/htmx.min.js htmx.min.js")

build_into() {  # npm ci into $1 (npm from Debian when missing: only this script needs it)
  local work=$1
  if ! command -v npm >/dev/null 2>&1; then
    echo "build_ui: installing npm (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  cp ui/package.json ui/package-lock.json "$work/"
  (cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
}

if [ "$check" = 1 ]; then
  "$py" - "$vendor" ui/package-lock.json "${assets[@]}" <<'PY'
import hashlib, json, sys
vendor, lock_path, *assets = sys.argv[1:]
lock = json.load(open(lock_path))["packages"]
manifest = json.load(open(f"{vendor}/MANIFEST.json"))
errors = []
for spec in assets:
    package, _dist, name = spec.split()
    entry = manifest.get(name)
    locked = lock.get(f"node_modules/{package}", {})
    if entry is None:
        errors.append(f"{name}: not in {vendor}/MANIFEST.json")
        continue
    for key in ("version", "integrity"):
        if entry.get(key) != locked.get(key):
            errors.append(f"{name}: manifest {key} {entry.get(key)!r} != lockfile {locked.get(key)!r}")
    actual = hashlib.sha256(open(f"{vendor}/{name}", "rb").read()).hexdigest()
    if actual != entry.get("sha256"):
        errors.append(f"{name}: SHA-256 {actual} != recorded {entry.get('sha256')}")
if errors:
    print("build_ui --check FAILED:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
PY
  if [ "$offline" = 0 ]; then
    work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
    build_into "$work"
    for spec in "${assets[@]}"; do
      read -r package dist name <<<"$spec"
      if ! cmp -s "$work/node_modules/$package/$dist" "$vendor/$name"; then
        echo "build_ui --check FAILED: $vendor/$name differs from $package's $dist in the lockfile's package" >&2
        exit 1
      fi
    done
  fi
  echo "build_ui --check: vendored assets match ui/package-lock.json"
  exit 0
fi

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
build_into "$work"
mkdir -p "$vendor"
for spec in "${assets[@]}"; do
  read -r package dist name <<<"$spec"
  cp "$work/node_modules/$package/$dist" "$vendor/$name"
  cp "$work/node_modules/$package/LICENSE" "$vendor/$name.LICENSE" 2>/dev/null || true
done
"$py" - "$vendor" ui/package-lock.json "${assets[@]}" <<'PY'
import hashlib, json, sys
vendor, lock_path, *assets = sys.argv[1:]
lock = json.load(open(lock_path))["packages"]
manifest = {}
for spec in assets:
    package, dist, name = spec.split()
    locked = lock[f"node_modules/{package}"]
    manifest[name] = {
        "package": package,
        "file": dist,
        "version": locked["version"],
        "integrity": locked["integrity"],
        "sha256": hashlib.sha256(open(f"{vendor}/{name}", "rb").read()).hexdigest(),
    }
with open(f"{vendor}/MANIFEST.json", "w") as fh:
    json.dump(manifest, fh, indent=2, sort_keys=True)
    fh.write("\n")
PY
echo "build_ui: vendored ${#assets[@]} asset(s) into $vendor"
