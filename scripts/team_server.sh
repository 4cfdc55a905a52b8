#!/usr/bin/env bash
# A team MLflow tracking server: PostgreSQL backend store, artifacts proxied through the server
# (clients need no storage credentials), and MLflow's basic-auth app for logins.
#
#   export MLFLOW_AUTH_ADMIN_PASSWORD='…'        # the admin's password (required, no default)
#   export MLFLOW_FLASK_SERVER_SECRET_KEY='…'    # signs the login forms (required)
#   bash scripts/team_server.sh postgresql://mlflow:PASS@127.0.0.1:5432/mlflow /srv/mlartifacts
#
# Optional environment: MLFLOW_HOST (default 127.0.0.1: only this machine; 0.0.0.0 exposes it to
# the network, behind a TLS-terminating reverse proxy), MLFLOW_PORT (5000), MLFLOW_WORKERS (2),
# MLFLOW_AUTH_DB (the logins' database, default sqlite under the artifacts folder's parent),
# MLFLOW_AUTH_CACHE_TTL_S (60: a worker remembers an accepted login this many seconds instead of
# hashing the password on every request; 0 hashes every time, see below).
# Clients: MLFLOW_TRACKING_URI=http://HOST:PORT plus MLFLOW_TRACKING_USERNAME / _PASSWORD.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
  echo "usage: $0 BACKEND_STORE_URI ARTIFACTS_DESTINATION" >&2
  exit 2
fi
backend=$1
artifacts=$2
for var in MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
  if [ -z "${!var:-}" ]; then
    echo "error: $var is not set (the server would start with no admin password or secret)" >&2
    exit 2
  fi
done
cache_ttl=${MLFLOW_AUTH_CACHE_TTL_S:-60}
if ! [[ $cache_ttl =~ ^[0-9]+$ ]]; then
  echo "error: MLFLOW_AUTH_CACHE_TTL_S must be a whole number of seconds (got '$cache_ttl')" >&2
  exit 2
fi
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
state=$(dirname "$(realpath -m "$artifacts")")
mkdir -p "$artifacts" "$state"
auth_db=${MLFLOW_AUTH_DB:-sqlite:///$state/mlflow_auth.db}

# The basic-auth app reads its settings from this file; the admin password comes from the
# environment (MLFLOW_AUTH_ADMIN_PASSWORD), so it is never written to disk here.
# auth_cache_ttl_seconds: MLflow's own cache of accepted logins (off by default). Without it every
# request pays a scrypt hash of the password (~0.1 s of CPU; a train stage makes ~75 requests).
# The cache lives in each worker: a password changed or a user deleted through the API is seen at
# once by the worker that handled it and by the others within the TTL.
auth_ini=$state/mlflow_auth.ini
cat > "$auth_ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $auth_db
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = $cache_ttl
EOF
export MLFLOW_AUTH_CONFIG_PATH=$auth_ini

PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m mlflow server --app-name basic-auth \
  --backend-store-uri "$backend" \
  --artifacts-destination "$artifacts" --serve-artifacts \
  --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-2}"
