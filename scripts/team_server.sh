#!/usr/bin/env bash
# A team MLflow tracking server: PostgreSQL backend store, artifacts proxied through the server
# (clients need no storage credentials), and MLflow's basic-auth app for logins.
#
#   export MLFLOW_BACKEND_STORE_URI='postgresql://mlflow@127.0.0.1:5432/mlflow'  # password: ~/.pgpass
#   export MLFLOW_AUTH_ADMIN_PASSWORD='…'        # the admin's password (required, no default)
#   export MLFLOW_FLASK_SERVER_SECRET_KEY='…'    # signs the login forms (required)
#   export MLFLOW_STATE_DIR=/srv/mlflow-state    # logins database + auth settings (outside the repo)
#   bash scripts/team_server.sh /srv/mlartifacts
#
# Secrets come only from the environment (or ~/.pgpass, mode 0600): none is put on a command line,
# where every local user could read it in `ps` (mlflow reads MLFLOW_BACKEND_STORE_URI itself).
# Everything the server writes is private to its user (umask 077: folders 0700, files 0600).
# The admin's password is set from MLFLOW_AUTH_ADMIN_PASSWORD at every start, so changing it and
# restarting rotates it; users: scripts/team_users.py.
#
# Optional environment: MLFLOW_HOST (default 127.0.0.1: only this machine; anything else is
# refused unless MLFLOW_ALLOW_PLAIN_HTTP=1, since basic-auth over plain HTTP sends passwords in
# clear text: bind 127.0.0.1 behind a TLS-terminating reverse proxy instead), MLFLOW_PORT (5000),
# MLFLOW_WORKERS (2), MLFLOW_AUTH_DB (the logins' database, default sqlite in MLFLOW_STATE_DIR),
# MLFLOW_AUTH_CACHE_TTL_S (60: a worker remembers an accepted login this many seconds instead of
# hashing the password on every request; 0 hashes every time, see below).
# Clients: MLFLOW_TRACKING_URI=http://HOST:PORT plus MLFLOW_TRACKING_USERNAME / _PASSWORD.
set -euo pipefail
umask 077
repo=$(cd "$(dirname "$0")/.." && pwd -P)
fail() { echo "error: $*" >&2; exit 2; }
[ $# -eq 1 ] || fail "usage: $0 ARTIFACTS_DESTINATION (the backend store comes from MLFLOW_BACKEND_STORE_URI)"
artifacts=$1
for var in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_STATE_DIR; do
  [ -n "${!var:-}" ] || fail "$var is not set (see the top of $0)"
done
inside_repo() { case "$(realpath -m "$1")/" in "$repo"/*) return 0 ;; *) return 1 ;; esac; }
case $artifacts in
  *://*) ;;  # a storage URI (s3://…)
  /*) inside_repo "$artifacts" && fail "the artifacts destination $artifacts is inside the repository $repo (its commands run git add -A): choose a folder outside it" ;;
  *) fail "the artifacts destination '$artifacts' is a relative path: give an absolute one outside the repository" ;;
esac
state=$MLFLOW_STATE_DIR
case $state in /*) ;; *) fail "MLFLOW_STATE_DIR '$state' is a relative path: give an absolute one outside the repository" ;; esac
inside_repo "$state" && fail "MLFLOW_STATE_DIR $state is inside the repository $repo (its commands run git add -A): choose a folder outside it"
cache_ttl=${MLFLOW_AUTH_CACHE_TTL_S:-60}
[[ $cache_ttl =~ ^[0-9]+$ ]] || fail "MLFLOW_AUTH_CACHE_TTL_S must be a whole number of seconds (got '$cache_ttl')"
host=${MLFLOW_HOST:-127.0.0.1}
case $host in
  127.0.0.1|localhost|::1) ;;
  *) [ "${MLFLOW_ALLOW_PLAIN_HTTP:-}" = 1 ] || fail "MLFLOW_HOST=$host serves logins over plain HTTP beyond this machine (passwords in clear text): bind 127.0.0.1 behind a TLS reverse proxy, or set MLFLOW_ALLOW_PLAIN_HTTP=1 to accept that" ;;
esac
port=${MLFLOW_PORT:-5000}
mkdir -p "$state"
chmod 700 "$state"
case $artifacts in *://*) ;; *) mkdir -p "$artifacts" ;; esac
auth_db=${MLFLOW_AUTH_DB:-sqlite:///$state/mlflow_auth.db}

# The basic-auth app reads its settings from this file; the admin password comes from the
# environment (MLFLOW_AUTH_ADMIN_PASSWORD), so it is never written to disk here.
# auth_cache_ttl_seconds: MLflow's own cache of accepted logins (off by default). Without it every
# request pays a scrypt hash of the password (~0.1 s of CPU; a train stage makes ~75 requests).
# The cache lives in each worker: a password changed or a user deleted through the API is seen at
# once by the worker that handled it and by the others within the TTL.
auth_ini=$state/mlflow_auth.ini
cat > "$auth_ini" <<INI
[mlflow]
default_permission = READ
database_uri = $auth_db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = $cache_ttl
INI
export MLFLOW_AUTH_CONFIG_PATH=$auth_ini

PY=$repo/.venv/bin/python
[ -x "$PY" ] || PY=python3
# MLflow applies MLFLOW_AUTH_ADMIN_PASSWORD only when it first creates the admin; set it on every
# start so that a changed password takes effect and the old one stops working.
"$PY" "$repo/scripts/team_users.py" sync-admin
cd "$state"  # anything the server writes by default lands in its private folder
exec "$PY" -m mlflow server --app-name basic-auth \
  --artifacts-destination "$artifacts" --serve-artifacts \
  --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-2}"
