"""Open the project's MLflow store in a real browser, as the README says, and check what it shows.

    python benchmarks/mlflow_ui_check.py                   # the repository's own store
    python benchmarks/mlflow_ui_check.py --root DIR --shots docs/   # another project copy

Starts ``python -m pipeline.ui`` (the README's command), opens the link it prints in headless
Chromium (Debian's ``/usr/bin/chromium`` driven by playwright) and follows the README's clicks:
the experiment must open on its runs table (not MLflow's GenAI overview); searching
``tags.stage = 'train'``, expanding two ``pipeline …`` runs and switching to the chart view must
draw ``train/return`` with one line per train run. Saves a screenshot of each step with
``--shots DIR`` (``mlflow_ui.png``, ``mlflow_compare.png``). Exit 1 with the step that failed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ui(root: Path, port: int, env: dict | None) -> tuple[subprocess.Popen, str]:
    """``python -m pipeline.ui`` in ``root``; returns the process and the link it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.ui", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the server's workers are stopped with it (_stop)
    )
    first = process.stdout.readline()
    match = re.search(r"open (\S+)", first)
    if not match:
        _stop(process)
        raise SystemExit(f"mlflow_ui_check: pipeline.ui printed no link: {first!r}")
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process, match.group(1)
        except OSError:
            time.sleep(0.5)
    _stop(process)
    raise SystemExit("mlflow_ui_check: mlflow ui did not answer within 2 minutes")


def _stop(process: subprocess.Popen) -> None:
    """Stop ``mlflow ui`` and its worker processes (its whole process group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    if process.stdout is not None:
        process.stdout.close()


def check(root: Path, shots: Path | None = None, runs: int = 2, env: dict | None = None) -> dict:
    """Follow the README's clicks; returns what was seen, raises AssertionError on a miss."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    port = _free_port()
    process, link = _start_ui(root, port, env)
    seen: dict = {"link": link}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(link, wait_until="load")
            # 1. the runs table, not the GenAI overview
            page.get_by_text("Run Name").first.wait_for()
            pipelines = page.locator("[role=row]").filter(has_text=re.compile(r"pipeline "))
            pipelines.first.wait_for()
            body = page.inner_text("body")
            assert "Token Usage" not in body, "the experiment opened on the GenAI overview"
            seen["pipeline_rows"] = pipelines.count()
            assert seen["pipeline_rows"] >= runs, f"{seen['pipeline_rows']} pipeline runs listed"
            # 2. search the train runs, expand `runs` pipelines, switch to the chart view
            search = page.get_by_placeholder(re.compile("metrics"))
            search.fill("tags.stage = 'train'")
            search.press("Enter")
            time.sleep(2)
            for i in range(runs):
                row = page.locator("[role=row]").filter(has_text=re.compile(r"pipeline "))
                row.nth(i).locator("[col-id*='Run Name'] button").first.click()
                time.sleep(1)
            if shots:
                page.screenshot(path=str(shots / "mlflow_ui.png"))
            page.locator("label:has(input[value=CHART])").first.click()
            charts = page.get_by_placeholder(re.compile("Search metric charts"))
            charts.fill("train/return")
            legend = page.get_by_text("train (train/return)", exact=True)
            try:  # one legend entry per train run once the charts are drawn
                legend.nth(runs - 1).wait_for(timeout=60_000)
            except PlaywrightTimeout:
                pass  # counted and asserted below
            body = page.inner_text("body")
            lines = re.findall(r"^train \(train/return\)$", body, flags=re.MULTILINE)
            seen["train_return_lines"] = len(lines)
            assert len(lines) >= runs, f"train/return drawn for {len(lines)} train runs"
            if shots:
                page.screenshot(path=str(shots / "mlflow_compare.png"))
            browser.close()
    finally:
        _stop(process)
    return seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(ROOT), help="the project whose store to open")
    p.add_argument("--shots", help="folder for the screenshots")
    p.add_argument("--runs", type=int, default=2, help="pipeline runs to compare")
    args = p.parse_args(argv)
    shots = Path(args.shots) if args.shots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    try:
        seen = check(Path(args.root), shots, args.runs)
    except AssertionError as exc:
        print(f"mlflow_ui_check: FAILED: {exc}")
        return 1
    print(f"mlflow_ui_check: ok {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
