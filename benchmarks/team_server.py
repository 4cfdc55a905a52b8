"""What a login costs the team tracking server: MLflow's credential cache on and off, side by side.

    python benchmarks/team_server.py                  # 30 rounds, cache TTL 60 s against 0
    python benchmarks/team_server.py --rounds 100 --workers 1

Starts ``scripts/team_server.sh`` twice on loopback (a SQLite backend store in a temporary folder
stands in for PostgreSQL; the login check is the same), one with ``MLFLOW_AUTH_CACHE_TTL_S=0``
(every request hashes the password, MLflow's default) and one with the script's default 60, and
times the requests a stage makes (``log_metric``, ``get_run``, ``search_runs`` through
``MlflowClient``, logged in as admin) *interleaved* (A, B, A, B, …), so a machine that slows
down during the run affects both alike. Prints the median milliseconds per request kind and the
ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark-password"
REQUESTS = ("log_metric", "get_run", "search_runs")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(folder: Path, ttl: int, workers: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "benchmark-secret",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": str(workers),
        "MLFLOW_AUTH_CACHE_TTL_S": str(ttl),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{folder}/backend.db",
        "MLFLOW_STATE_DIR": str(folder / "state"),
    }
    folder.mkdir(parents=True)
    process = subprocess.Popen(
        [
            "bash",
            str(ROOT / "scripts/team_server.sh"),
            str(folder / "artifacts"),
        ],
        env=env,
        stdout=open(folder / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def _wait(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-2000:]
                raise SystemExit(f"error: the server did not start:\n{tail}") from None
            time.sleep(1)


def _round(client, experiment: str, run_id: str, step: int) -> dict[str, float]:
    """Seconds of each request kind, once."""
    seconds = {}
    for kind in REQUESTS:
        start = time.perf_counter()
        if kind == "log_metric":
            client.log_metric(run_id, "x", 1.0, step=step)
        elif kind == "get_run":
            client.get_run(run_id)
        else:
            client.search_runs([experiment], max_results=10)
        seconds[kind] = time.perf_counter() - start
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30, help="timed rounds of the three requests")
    p.add_argument("--ttl", type=int, default=60, help="the cached arm's MLFLOW_AUTH_CACHE_TTL_S")
    p.add_argument("--workers", type=int, default=2, help="MLFLOW_WORKERS of both servers")
    args = p.parse_args()

    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD)
    from mlflow import MlflowClient

    arms = {"no cache (TTL 0)": 0, f"cache (TTL {args.ttl} s)": args.ttl}
    with tempfile.TemporaryDirectory(prefix="team-bench-") as tmp:
        servers = {name: _start(Path(tmp) / str(t), t, args.workers) for name, t in arms.items()}
        try:
            clients, run_ids = {}, {}
            for name, (process, url) in servers.items():
                _wait(process, url, Path(tmp) / str(arms[name]) / "server.log")
                client = MlflowClient(url)
                experiment = client.create_experiment("bench")
                run_ids[name] = client.create_run(experiment).info.run_id
                clients[name] = (client, experiment)
                for _ in range(2 * args.workers):  # every worker has logged in once, both arms
                    client.get_run(run_ids[name])
            seconds = {name: {kind: [] for kind in REQUESTS} for name in arms}
            for step in range(args.rounds):
                for name, (client, experiment) in clients.items():
                    for kind, took in _round(client, experiment, run_ids[name], step).items():
                        seconds[name][kind].append(took)
        finally:
            for process, _ in servers.values():
                if process.poll() is None:
                    os.killpg(process.pid, 15)
                    process.wait(timeout=30)

    base = next(iter(arms))
    print(f"team server, {args.workers} worker(s), {args.rounds} interleaved rounds; median ms")
    print(f"{'request':<12}" + "".join(f"{name:>20}" for name in arms) + f"{'ratio':>8}")
    for kind in REQUESTS:
        ms = {name: 1e3 * statistics.median(seconds[name][kind]) for name in arms}
        ratio = ms[base] / ms[list(arms)[-1]]
        print(f"{kind:<12}" + "".join(f"{ms[name]:>20.1f}" for name in arms) + f"{ratio:>7.1f}×")


if __name__ == "__main__":
    sys.exit(main())
