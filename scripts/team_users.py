"""Logins on the team tracking server: one per person, created and rotated by the admin.

    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000          # the server (scripts/team_server.sh)
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD='…'   # the admin's login
    python scripts/team_users.py create alice                 # asks for alice's password
    python scripts/team_users.py grant alice dreamerv3         # EDIT on that experiment
    python scripts/team_users.py grant alice --model dreamerv3-Pendulum-v1   # and on a model
    python scripts/team_users.py password alice               # a new password for alice (or admin)

Passwords are read with a prompt, or from ``TEAM_USER_PASSWORD`` for scripts, never from the
command line (every local user can read a command line in ``ps``). Each person then logs in as
themselves (``MLFLOW_TRACKING_USERNAME=alice``); nobody's client uses ``admin``. Whoever registers
a model's first version manages that model; the others need ``grant --model`` to add versions.
Like the stages, this refuses to send the admin's login over plain ``http://`` to another machine
(``MLFLOW_ALLOW_PLAIN_HTTP=1`` accepts that).

``sync-admin`` is what ``scripts/team_server.sh`` runs before every start: MLflow applies
``MLFLOW_AUTH_ADMIN_PASSWORD`` only when it first creates the admin, so a changed value would be
ignored and the old password keep working; this sets the stored one to it. It talks to the logins'
database (``MLFLOW_AUTH_CONFIG_PATH``), not to the server.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's packages
from pipeline.store import TrackingError, refuse_plain_http_login  # noqa: E402


def _password(prompt: str) -> str:
    value = os.environ.get("TEAM_USER_PASSWORD") or getpass.getpass(prompt)
    if not value:
        raise SystemExit("error: an empty password")
    return value


def _call(method: str, path: str, body: dict) -> dict:
    """One request to the server's auth API as the admin (``MLFLOW_TRACKING_*``)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    secret = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not uri.startswith(("http://", "https://")) or not user or not secret:
        raise SystemExit(
            "error: set MLFLOW_TRACKING_URI (http[s]://…), MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to the server and the admin's login"
        )
    refuse_plain_http_login(uri)
    if method == "GET":
        request = urllib.request.Request(f"{uri}{path}?{urllib.parse.urlencode(body)}")
    else:
        request = urllib.request.Request(uri + path, data=json.dumps(body).encode(), method=method)
    request.add_header("Content-Type", "application/json")
    pair = base64.b64encode(f"{user}:{secret}".encode()).decode()
    request.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode() or "{}"
    except urllib.error.HTTPError as exc:
        detail = " ".join(exc.read().decode(errors="replace").split())[:300]
        raise SystemExit(f"error: {method} {path}: HTTP {exc.code} {detail}") from None
    return json.loads(text)


def _experiment_id(name: str) -> str:
    found = _call("GET", "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": name})
    return found["experiment"]["experiment_id"]


def sync_admin() -> None:
    """Set the stored admin password to ``MLFLOW_AUTH_ADMIN_PASSWORD`` (if the admin exists)."""
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    config = read_auth_config()
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)
    name = config.admin_username or "admin"
    if password and store.has_user(name) and not store.authenticate_user(name, password):
        store.update_user(name, password=password)
        print(f"team_users: the password of {name} was changed to MLFLOW_AUTH_ADMIN_PASSWORD")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="a new user").add_argument("user")
    grant = commands.add_parser("grant", help="a permission on an experiment or a model")
    grant.add_argument("user")
    target = grant.add_mutually_exclusive_group(required=True)
    target.add_argument("experiment", nargs="?", help="the experiment's name (mlflow.experiment)")
    target.add_argument("--model", help="a registered model's name (dreamerv3-<env id>)")
    grant.add_argument("--permission", default="EDIT", choices=["READ", "EDIT", "MANAGE"])
    commands.add_parser("password", help="a new password for a user").add_argument("user")
    commands.add_parser("sync-admin", help="(team_server.sh) the admin password from the env")
    args = p.parse_args(argv)
    try:
        run(args)
    except TrackingError as exc:
        raise SystemExit(f"error: {exc}") from None
    return 0


def run(args: argparse.Namespace) -> None:
    if args.command == "create":
        body = {"username": args.user, "password": _password(f"password for {args.user}: ")}
        _call("POST", "/api/2.0/mlflow/users/create", body)
        print(f"team_users: created {args.user}")
    elif args.command == "grant":
        if args.model:
            what, resource = ("registered_model", args.model), f"model {args.model}"
        else:
            what = ("experiment", _experiment_id(args.experiment))
            resource = f"experiment {args.experiment}"
        body = {
            "username": args.user,
            "resource_type": what[0],
            "resource_id": what[1],
            "permission": args.permission,
        }
        _call("POST", "/api/3.0/mlflow/users/permissions/grant", body)
        print(f"team_users: {args.user} has {args.permission} on {resource}")
    elif args.command == "password":
        body = {"username": args.user, "password": _password(f"new password for {args.user}: ")}
        _call("PATCH", "/api/2.0/mlflow/users/update-password", body)
        print(f"team_users: new password for {args.user}")
    else:
        sync_admin()


if __name__ == "__main__":
    sys.exit(main())
