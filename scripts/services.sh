#!/usr/bin/env bash
# Start (idempotently) the real services the integration tests use, all on 127.0.0.1:
#   containerd + dockerd, an OCI registry on :5000, PostgreSQL 15 on :5432 (database
#   helixgate_test, user helixgate), a moto server (S3 + SQS) on :5900, and a one-machine
#   Slurm cluster of our own (scripts/slurm_cluster.sh: munged, slurmctld, slurmd hgnode1 and
#   hgnode2; clients reach it through SLURM_CONF).
# Writes the connection settings to .services.env for the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${HELIXGATE_SERVICES_DIR:-/tmp/helixgate-services}
mkdir -p "$state"

wait_for() {  # wait_for <description> <command...>
  local what=$1; shift
  for _ in $(seq 1 120); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $what did not come up" >&2
  tail -n 30 "$state"/*.log >&2 || true
  return 1
}

# --- Docker engine
if ! docker info >/dev/null 2>&1; then
  if ! pgrep -x containerd >/dev/null; then
    nohup containerd >"$state/containerd.log" 2>&1 &
    wait_for containerd test -S /run/containerd/containerd.sock
  fi
  if ! pgrep -x dockerd >/dev/null; then
    nohup dockerd --containerd=/run/containerd/containerd.sock >"$state/dockerd.log" 2>&1 &
  fi
  wait_for dockerd docker info
fi

if [ "${HELIXGATE_ONLY_DOCKER:-}" = 1 ]; then
  echo "services: docker is up"
  exit 0
fi

# --- OCI registry (Debian's docker-registry, distribution 2.8)
if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  cat >"$state/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $state/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
  nohup docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 &
  wait_for registry curl -fsS http://127.0.0.1:5000/v2/
fi

# --- PostgreSQL 15
pgver=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_lsclusters -h | grep -q "^$pgver main" || pg_createcluster "$pgver" main >/dev/null
  pg_ctlcluster "$pgver" main start
fi
wait_for postgresql su postgres -c "psql -qAtc 'select 1'"
su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='helixgate'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"create role helixgate login password 'helixgate' superuser\""
su postgres -c "psql -qAtc \"select 1 from pg_database where datname='helixgate_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O helixgate helixgate_test"

# --- moto server (S3 + SQS)
if ! curl -fsS http://127.0.0.1:5900/moto-api/ >/dev/null 2>&1; then
  nohup .venv/bin/moto_server -H 127.0.0.1 -p 5900 >"$state/moto.log" 2>&1 &
  wait_for moto curl -fsS http://127.0.0.1:5900/moto-api/
fi

# --- Slurm (our own munged, slurmctld and two slurmd node names; see scripts/slurm_cluster.sh)
slurm_conf=$(bash scripts/slurm_cluster.sh | tail -n 1)

cat > .services.env <<ENV
HELIXGATE_TEST_POSTGRES_URL=postgresql+psycopg://helixgate:helixgate@127.0.0.1:5432/helixgate_test
HELIXGATE_TEST_MOTO_URL=http://127.0.0.1:5900
HELIXGATE_TEST_REGISTRY=127.0.0.1:5000
HELIXGATE_TEST_SLURM_CONF=$slurm_conf
SLURM_CONF=$slurm_conf
ENV
echo "services: docker, registry 127.0.0.1:5000, postgresql, moto 127.0.0.1:5900, slurm ($slurm_conf) are up"
