#!/usr/bin/env bash
# Install everything HelixGate needs on a fresh Debian machine. Idempotent.
#   system packages: docker.io (engine), busybox-static (offline test images),
#                    docker-registry (a real OCI registry), postgresql (integration tests),
#                    nodejs + bubblewrap (CWL expressions run in a node sandboxed by bwrap),
#                    slurmctld + slurmd + slurm-client + munge (a one-machine Slurm cluster),
#                    chromium (browser tests of the web UI, driven by Playwright)
#   python:          a virtual environment in .venv with helixgate and its extras (playwright
#                    included: it launches /usr/bin/chromium, so no browser is downloaded)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -q '^wget$' || need_apt+=(busybox-static)
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
command -v slurmctld >/dev/null 2>&1 || need_apt+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need_apt+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need_apt+=(slurm-client)
command -v munged >/dev/null 2>&1 || need_apt+=(munge)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "install: apt packages ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "install: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.helixgate-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
  echo "install: python dependencies"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev,postgres,s3]'
  touch "$stamp"
fi
