"""Deliberate crashes at named points, for the fault-injection tests and benchmark.

``DREAMER_FAULT=checkpoint.state:2`` makes this process SIGKILL itself the second time it passes
``fault_point("checkpoint.state")`` (``:N`` omitted: the first time). Unset, a point costs one
environment lookup; points sit only where a kill is worth proving survivable (inside a checkpoint
write, between training and its outputs, before a model upload), never in a hot loop. A timer
can rarely hit those few milliseconds on purpose; ``benchmarks/fault_injection.py`` also kills at
random moments from outside.

Before dying a point writes ``KILLED_MARKER`` and its name to stderr: how a SIGKILLed stage shows in
DVC's log depends on the shell DVC runs it with (``exited with -9`` when the shell execs the
command, ``exited with 137`` when it forks), so the tests and the benchmark look for the marker.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV_VAR = "DREAMER_FAULT"
KILLED_MARKER = "fault point reached, SIGKILL:"
_passed: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """SIGKILL this process here if ``$DREAMER_FAULT`` names this point and its count is due."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(count or 1):
        print(f"{KILLED_MARKER} {spec}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
