"""Open the project's MLflow store in the MLflow UI, on the experiment's runs table.

    python -m pipeline.ui                 # serves the embedded store on http://127.0.0.1:5000
    python -m pipeline.ui --port 5001

Prints the link to open (the experiment's runs table, where curves are compared; a plain
``mlflow ui`` lands on the GenAI overview instead) and runs ``mlflow ui`` on the store the
stages log to (``MLFLOW_TRACKING_URI``, ``mlflow.tracking_uri``, else ``./mlflow.db``). With a
tracking server configured it only prints that server's link.
"""

from __future__ import annotations

import os
import sys

from pipeline import cli, store


def main(argv: list[str] | None = None) -> None:
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    cfg = cli.load(args.params)
    uri = store.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    name = cfg.mlflow.experiment
    if uri.startswith(("http://", "https://")):
        experiment_id = store.find_experiment_id(uri, name)
        where = store.ui_url(uri, experiment_id) if experiment_id else uri
        print(f"mlflow ui: the tracking server {where}")
        return
    experiment_id = store.find_experiment_id(uri, name)
    base = f"http://{args.host}:{args.port}"
    link = store.ui_url(base, experiment_id) if experiment_id else base
    note = "" if experiment_id else f" (no experiment {name!r} yet: run the pipeline first)"
    print(f"mlflow ui: open {link}{note}", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", args.host, "--port", str(args.port)]
    # Become `mlflow ui` (exec): Ctrl-C and kill reach the server itself, and no child is left
    # behind when this process is stopped.
    os.execv(sys.executable, command)


if __name__ == "__main__":
    sys.exit(cli.run(main))
