"""dreamer/faults.py: a named point kills (or pauses) the process at its N-th pass, only there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dreamer.faults import KILLED_MARKER

from .helpers import REPO

SCRIPT = """
from dreamer.faults import fault_point
for i in range(3):
    fault_point("p")
    print("passed p", i + 1, flush=True)
fault_point("q")
print("passed q", flush=True)
"""


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _run(spec: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DREAMER_FAULT": spec}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_a_point_pauses_at_its_count_then_another_kills_with_the_marker():
    process = _run("p:2:stop,q")
    deadline = time.monotonic() + 60
    while _state(process.pid) != "T":
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGCONT)
    out, err = process.communicate(timeout=60)
    assert out.decode().split("\n")[:-1] == ["passed p 1", "passed p 2", "passed p 3"]
    assert process.returncode == -signal.SIGKILL
    assert err.decode().strip() == f"{KILLED_MARKER} q:1"


def test_an_unnamed_or_unreached_point_does_nothing():
    out, _ = _run("p:9,other").communicate(timeout=60)
    assert out.decode().count("passed") == 4
